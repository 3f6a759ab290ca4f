"""Federated learning: partitions, FedProx's proximal term, and a whole Flower simulation."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from listening import free_port, start_listening
from torch import nn

from dlab.errors import DlabError
from dlab.federated import FederatedSettings, ProximalLoss, federate, partition


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """Ray (under Flower's simulation) installs its own SIGTERM handler, which once raised
    SystemExit inside a later test's subprocess handling: every test here leaves them as found."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        if handler is not None:  # None: set outside Python, nothing to put back
            signal.signal(sig, handler)


LABELS = np.repeat(np.arange(10), 200)  # 2,000 samples, 10 balanced classes


def classes_per_client(parts, share=0.05):
    """How many classes hold at least `share` of each client's samples."""
    return [int((np.bincount(LABELS[p], minlength=10) / len(p) >= share).sum()) for p in parts]


def test_iid_partitions_are_disjoint_equal_and_cover_everything():
    parts = partition(LABELS, 8, None, seed=0)
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS) == len(np.unique(joined))
    assert {len(p) for p in parts} == {250}
    assert min(classes_per_client(parts)) >= 9


def test_dirichlet_alpha_sets_the_label_skew():
    skewed = partition(LABELS, 10, 0.1, seed=0)
    mixed = partition(LABELS, 10, 100.0, seed=0)
    assert np.mean(classes_per_client(skewed)) < 4  # most clients see a few classes
    assert np.mean(classes_per_client(mixed)) > 9.5
    assert len(np.unique(np.concatenate(skewed))) == len(LABELS)
    again = partition(LABELS, 10, 0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))


def test_an_impossible_partition_says_what_to_change():
    with pytest.raises(DlabError, match="--alpha: .*fewer clients or a larger alpha"):
        partition(LABELS[:60], 20, 0.01, seed=0, min_size=10)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"clients": 1}, "--clients"),
        ({"fraction": 0.0}, "--fraction"),
        ({"alpha": -1.0}, "--alpha"),
        ({"strategy": "fedsgd"}, "--strategy"),
    ],
)
def test_settings_are_checked(fields, message):
    with pytest.raises(DlabError, match=message):
        FederatedSettings(**fields).check()


def test_fedprox_adds_mu_times_the_drift_to_the_gradient():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    loss = ProximalLoss(nn.CrossEntropyLoss(), model, mu=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)  # drift away from the global weights
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    loss(model(x), y).backward()
    proximal = model.weight.grad.clone()
    model.zero_grad()
    nn.CrossEntropyLoss()(model(x), y).backward()
    torch.testing.assert_close(proximal - model.weight.grad, 0.5 * torch.ones(2, 3))


@pytest.mark.slow
def test_a_flower_simulation_trains_a_private_fedprox_federation(tmp_path):
    import flwr  # noqa: F401  (the Makefile installs it: a broken Flower fails, never skips)

    recipe = {
        "name": "fl",
        "seed": 0,
        "data": {"name": "mnist_sample", "batch_size": 32, "val_size": 400},
        "model": {"name": "mlp", "hidden": [64]},
        "train": {
            "optimizer": {"name": "sgd", "lr": 0.1},
            "privacy": {"epsilon": 8.0, "delta": 1e-4, "max_grad_norm": 1.0},
        },
    }
    settings = FederatedSettings(
        clients=3, rounds=3, alpha=1.0, strategy="fedprox", mu=0.01, central=False
    )
    run = federate(recipe, settings=settings, runs_dir=tmp_path, progress=False)
    rounds = [json.loads(x) for x in (run.path / "federated.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rounds] == [0, 1, 2, 3]
    accuracy = [r["val_accuracy"] for r in rounds]
    assert accuracy[0] < 0.2 and accuracy[-1] > 0.6  # from chance to learned, privately
    for r in rounds[1:]:
        assert [c["client"] for c in r["clients_train"]] == [0, 1, 2]
        assert [c["client"] for c in r["clients_evaluate"]] == [0, 1, 2]
    spent = [r["epsilon"] for r in rounds[1:]]
    # each client's accountant spans its rounds (kept in Flower's context.state): the budget
    # grows round by round and ends at, not above, the recipe's epsilon
    assert spent == sorted(spent) and 0.8 * 8.0 < spent[-1] <= 8.0
    meta = run.dir.meta
    assert meta["status"] == "completed" and meta["kind"] == "federated"
    assert len(meta["federated"]["client_samples"]) == 3
    assert meta["evaluation"]["test"]["accuracy"] > 0.6  # the saved global model, reloaded
    report = (run.path / "report.html").read_text()
    assert 'id="federated"' in report and "global accuracy per round" in report


def _tls_handshake(port: int, cafile: Path | None) -> None:
    """Open a TLS connection to 127.0.0.1:port, checking its certificate against `cafile`
    (None: the system's authorities, which do not know our test CA)."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.slow
def test_the_flower_app_runs_on_a_secured_superlink_and_two_authenticated_supernodes(tmp_path):
    """Flower's deployment runtime on 127.0.0.1, secured as the README tells users to run it
    across machines: the SuperLink serves TLS with a certificate of our own CA, and admits only
    SuperNodes whose public keys were registered (`flwr supernode register`). Two registered
    nodes train the dlab app; a node with an unknown key is refused."""
    import flwr  # noqa: F401  (the Makefile installs it: a broken Flower fails, never skips)
    from tls_files import write_key_pair, write_server_certificates

    recipe = tmp_path / "fl.yaml"
    recipe.write_text(
        "name: fl\nseed: 0\ndata: {name: mnist_sample, batch_size: 32, val_size: 400}\n"
        "model: {name: mlp, hidden: [64]}\ntrain: {optimizer: {name: sgd, lr: 0.1}}\n"
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    tls = write_server_certificates(secrets)
    keys = [write_key_pair(secrets, name) for name in ("node0", "node1", "stranger")]
    home = tmp_path / "flwr"
    home.mkdir()
    binaries = str(Path(sys.executable).parent)  # flower-superlink starts flower-superexec
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{binaries}:{os.environ['PATH']}"}
    started: list[subprocess.Popen] = []
    try:
        superlink = [f"{binaries}/flower-superlink", "--ssl-ca-certfile", str(tls["ca"])]
        superlink += ["--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"])]
        # the app declares dlab-toolkit[federated]; every machine here already has it (as the
        # README asks), so the SuperLink is told not to install it per run in a fresh environment
        superlink += ["--enable-supernode-auth", "--disable-runtime-dependency-installation"]
        superlink.append("--port")
        link = start_listening(lambda port: [*superlink, str(port)], env, started, tmp_path)
        _tls_handshake(link, tls["ca"])  # the certificate our CA signed, for 127.0.0.1
        with pytest.raises(ssl.SSLCertVerificationError):
            _tls_handshake(link, None)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "here"\n\n[superlink.here]\naddress = "127.0.0.1:{link}"\n'
            f'root-certificates = "{tls["ca"]}"\n'
        )
        for _, public in keys[:2]:  # the federation's owner admits two nodes by their keys
            registered = subprocess.run(
                [f"{binaries}/flwr", "supernode", "register", str(public), "here"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "registered successfully" in registered.stdout, registered.stdout[-2000:]
        node = [f"{binaries}/flower-supernode", "--root-certificates", str(tls["ca"])]
        node += ["--superlink", f"127.0.0.1:{link}"]  # SuperNodes install app dependencies only if asked
        for client, (private, _) in enumerate(keys[:2]):
            mine = [*node, "--auth-supernode-private-key", str(private), "--node-config"]
            mine.append(f"partition-id={client} num-partitions=2")
            start_listening(lambda port, n=mine: [*n, "--port", str(port)], env, started, tmp_path)
        # a node with a key nobody registered: refused at activation (it stays up, retrying its
        # own SuperExec, so the test reads its log and stops it)
        refused = tmp_path / "stranger.log"
        stranger = [*node, "--auth-supernode-private-key", str(keys[2][0]), "--max-retries", "1"]
        with refused.open("w") as log:
            started.append(
                subprocess.Popen(
                    [*stranger, "--port", str(free_port())],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                )
            )
        deadline = time.time() + 90
        while "Failed to activate SuperNode" not in refused.read_text():
            assert time.time() < deadline, refused.read_text()[-2000:]
            time.sleep(0.5)
        app = Path(__file__).resolve().parents[1] / "examples" / "flower_app"
        config = f"recipe='{recipe}' clients=2 rounds=2 runs-dir='{tmp_path / 'runs'}'"
        done = subprocess.run(
            [f"{binaries}/flwr", "run", str(app), "here", "--stream", "--run-config", config],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert "federated run written to" in done.stdout + done.stderr, done.stdout[-3000:]
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(timeout=30)
    (run,) = (tmp_path / "runs" / "fl").iterdir()
    rounds = [json.loads(x) for x in (run / "federated.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["val_accuracy"] < 0.2 < 0.7 < rounds[-1]["val_accuracy"]
    assert [c["client"] for c in rounds[-1]["clients_train"]] == [0, 1]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["evaluation"]["test"]["accuracy"] > 0.7


class _Reply:
    """What the server reads of a client's training reply."""

    def __init__(self, client, count, weights):
        from flwr.app import ArrayRecord, MetricRecord, RecordDict

        metrics = MetricRecord({"client": client, "num-examples": count})
        self.content = RecordDict({"arrays": ArrayRecord(weights), "metrics": metrics})

    def has_error(self) -> bool:
        return False


def test_the_server_drops_updates_that_lie_about_their_size_or_are_not_finite(caplog):
    from dlab.federated.server import keep_valid
    from dlab.federated.settings import training_count

    limits = {0: training_count(100), 1: training_count(100), 2: training_count(100)}
    assert limits[0] == 90
    good = _Reply(0, 90, {"w": torch.ones(3)})
    replies = [
        good,
        _Reply(1, 10**9, {"w": torch.ones(3)}),  # claims a billion examples to own the average
        _Reply(2, 90, {"w": torch.tensor([1.0, float("nan"), 0.0])}),
        _Reply(7, 90, {"w": torch.ones(3)}),  # not a partition
    ]
    dropped = []
    assert keep_valid(replies, limits, dropped) == [good]
    assert [d["client"] for d in dropped] == [1, 2, 7]
    assert "reports 1000000000 examples; its partition trains on 90" in dropped[0]["why"]
    assert "non-finite weights (w)" in dropped[1]["why"]
    assert "not one of the 3 partitions" in dropped[2]["why"]
    assert caplog.text.count("dropped a client update") == 3
