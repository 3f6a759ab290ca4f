"""After training: tune, compress, export, serve, and federated training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dlab.cli.app import Overrides, RunsDir, _console, _number, _print_run_summary, app
from dlab.errors import DlabError
from dlab.extras import require


@app.command()
def federate(
    recipe: Annotated[str, typer.Argument(help="a classification recipe, e.g. mnist_cnn")],
    override: Overrides = None,
    clients: Annotated[int, typer.Option(help="virtual clients (Flower SuperNodes)")] = 10,
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 5,
    local_epochs: Annotated[int, typer.Option(help="local epochs per round")] = 1,
    alpha: Annotated[
        float | None,
        typer.Option(help="Dirichlet(alpha) label skew per client; leave out for IID"),
    ] = None,
    fraction: Annotated[float, typer.Option(help="share of clients sampled each round")] = 1.0,
    strategy: Annotated[str, typer.Option(help="fedavg or fedprox")] = "fedavg",
    mu: Annotated[float, typer.Option(help="FedProx's proximal weight")] = 0.01,
    central: Annotated[
        bool,
        typer.Option(
            "--central/--no-central",
            help="also train the recipe centrally, as many epochs as rounds x local epochs",
        ),
    ] = True,
    runs_dir: RunsDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Federated learning with Flower (simulation on this machine): FedAvg/FedProx, IID or Dirichlet."""
    from dlab.federated import FederatedSettings, federate

    settings = FederatedSettings(
        clients=clients,
        rounds=rounds,
        local_epochs=local_epochs,
        alpha=alpha,
        fraction=fraction,
        strategy=strategy,
        mu=mu,
        central=central,
    )
    run = federate(recipe, override or [], settings, runs_dir=runs_dir, progress=not quiet)
    meta = run.dir.meta
    table = Table(title=f"federated {strategy}, {clients} clients, alpha {alpha or 'IID'}")
    for column in ("round", "global accuracy", "global loss", "client train loss"):
        table.add_column(column)
    for line in (run.path / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        table.add_row(
            str(record["epoch"]),
            _number(record.get("val_accuracy")),
            _number(record.get("val_loss")),
            _number(record.get("train_loss")),
        )
    _console().print(table)
    if meta.get("central"):
        _console().print(
            f"centralised, {meta['central']['epochs']} epochs: accuracy {meta['central']['accuracy']:.4f}"
        )
    _print_run_summary(run)


@app.command("tune")
def tune_command(
    recipe: Annotated[str, typer.Argument(help="recipe with a tune: section")],
    override: Overrides = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", "-n", min=1, help="trials in total (default: tune.trials)"),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="study storage URL, e.g. postgresql://user:pw@host/db (default: SQLite in the runs folder)"
        ),
    ] = None,
    runs_dir: RunsDir = None,
    train_best: Annotated[
        bool,
        typer.Option(
            "--train-best/--no-train-best", help="train the best parameters as a run at the end"
        ),
    ] = True,
) -> None:
    """Search hyper-parameters with Optuna (TPE, pruning); resumable, and shared by several workers."""
    from dlab.tune import tune

    result = tune(
        recipe,
        override or [],
        trials=trials,
        storage=storage,
        runs_dir=runs_dir,
        train_best=train_best,
    )
    table = Table(title=f"study {result.study_name}: best {result.best_value:.4g}")
    for column in ("trial", "state", "value", "parameters"):
        table.add_column(column)
    for t in result.trials:
        table.add_row(
            str(t["number"]),
            t["state"],
            _number(t["value"]) if t["value"] is not None else "-",
            ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in t["values"].items()
            ),
        )
    console = _console()
    console.print(table)
    console.print(f"best recipe: {result.best_recipe_path}")
    if result.best_run is not None:
        console.print(f"best run: {result.best_run.path}")
    elif result.trained_elsewhere == "in progress":
        console.print("best run: another worker of this study is training it")
    elif result.trained_elsewhere:
        console.print(
            f"best run: {result.trained_elsewhere} (trained before, or by another worker)"
        )


@app.command()
def compress(
    run: Annotated[Path, typer.Argument(help="run directory of a trained classifier")],
    quantize: Annotated[
        str | None, typer.Option(help="int8 (auto), int8-dynamic or int8-static")
    ] = None,
    distill: Annotated[
        str | None, typer.Option(help="student recipe to train from this run as the teacher")
    ] = None,
    prune: Annotated[
        float | None,
        typer.Option(help="fraction of weights (or channels with --structured) to remove"),
    ] = None,
    structured: Annotated[
        bool, typer.Option(help="prune whole channels/units (cnn, mlp): a smaller, faster model")
    ] = False,
    finetune_epochs: Annotated[
        int, typer.Option(min=0, help="fine-tuning epochs after pruning")
    ] = 2,
    alpha: Annotated[
        float, typer.Option(help="distillation: weight of the teacher's soft targets")
    ] = 0.5,
    temperature: Annotated[float, typer.Option(help="distillation: softmax temperature")] = 4.0,
    runs_dir: RunsDir = None,
) -> None:
    """Quantize, distill or prune a run into a new run, and compare accuracy, size and latency."""
    from dlab import compress as compression

    chosen = [
        name
        for name, value in (("--quantize", quantize), ("--distill", distill), ("--prune", prune))
        if value is not None
    ]
    if len(chosen) != 1:
        raise DlabError("compress: give exactly one of --quantize, --distill or --prune")
    if quantize is not None:
        result = compression.quantize_run(run, quantize, runs_dir)
    elif distill is not None:
        result = compression.distill_run(run, distill, alpha, temperature, runs_dir=runs_dir)
    else:
        result = compression.prune_run(run, prune, structured, finetune_epochs, runs_dir=runs_dir)
    rows = result.dir.meta["compression"]["comparison"]
    table = Table(title=f"{result.path}")
    for column in ("model", "accuracy", "size MB", "batch 1 p50 ms", "batch 64 p50 ms"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["model"],
            f"{r['accuracy']:.4f}",
            f"{r['size_bytes'] / 1e6:.3f}",
            f"{r['batch1_p50_ms']:.3f}",
            f"{r['batch64_p50_ms']:.2f}",
        )
    _console().print(table)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run directory")],
    fmt: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write (default: RUN/model.onnx)")
    ] = None,
) -> None:
    """Export the model to ONNX (dynamic batch and length) and verify it with onnxruntime."""
    from dlab.export import export_onnx

    if fmt != "onnx":
        raise DlabError(f"export: format '{fmt}' is not supported; use onnx")
    result = export_onnx(run, output)
    _console().print(
        f"wrote {result.path} ({result.exporter}, opset {result.opset}; inputs {', '.join(result.inputs)}; "
        f"onnxruntime matches PyTorch to {result.max_abs_error:.1e} on {result.checked_samples} test samples)"
    )


# long: one typer option per server setting, each with its help text
@app.command("serve")
def serve_command(
    target: Annotated[Path, typer.Argument(help="run directory, or a .onnx file")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    host: Annotated[
        str, typer.Option(help="address to bind; anything but loopback needs --token")
    ] = "127.0.0.1",
    token: Annotated[
        str | None,
        typer.Option(help="require Authorization: Bearer TOKEN (or set DLAB_SERVE_TOKEN)"),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="allow a non-loopback bind without a token")
    ] = False,
    backend: Annotated[
        str, typer.Option(help="torch, onnx (the run's model.onnx) or auto")
    ] = "auto",
    max_batch: Annotated[
        int, typer.Option(min=1, help="largest micro-batch (1: no batching)")
    ] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="how long a request waits for company")
    ] = 5.0,
    cors: Annotated[
        list[str] | None,
        typer.Option(help="an origin allowed to call the API from a browser (repeatable)"),
    ] = None,
    limit_concurrency: Annotated[
        int, typer.Option(min=1, help="open connections and requests before a 503 (uvicorn)")
    ] = 128,
    keep_alive: Annotated[
        float, typer.Option(min=0.1, help="seconds an idle keep-alive connection stays open")
    ] = 5.0,
    header_timeout: Annotated[
        float,
        typer.Option(min=0.1, help="seconds a request's headers may take to arrive (slowloris)"),
    ] = 10.0,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="a Host name requests may use besides the bound address (repeatable; a loopback "
            "server accepts only its own names, against DNS rebinding; '*': any)"
        ),
    ] = None,
) -> None:
    """Serve a model over HTTP: /predict, /generate, /metadata, /metrics, and a page to try it."""
    require("serve", "serve")
    from dlab.serve import serve

    _console().print(
        f"serving {target} on http://{host}:{port}  (open it in a browser; Ctrl-C stops)"
    )
    serve(
        target,
        host=host,
        port=port,
        token=token,
        insecure=insecure,
        backend=backend,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        cors=cors,
        allowed_hosts=allowed_host,
        limit_concurrency=limit_concurrency,
        keep_alive_s=keep_alive,
        header_timeout_s=header_timeout,
    )
