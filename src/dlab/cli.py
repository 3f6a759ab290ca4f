"""The `dlab` command line: parses, calls one library function, prints. No logic of its own."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dlab.errors import DlabError

app = typer.Typer(
    name="dlab",
    help="A deep-learning lab: train, check, evaluate and explain the classic model families on real data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs_app = typer.Typer(help="Look at runs.", no_args_is_help=True)
data_app = typer.Typer(help="Get data sets onto this machine.", no_args_is_help=True)
recipe_app = typer.Typer(help="Look at recipes.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(data_app, name="data")
app.add_typer(recipe_app, name="recipe")


def _console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


Overrides = Annotated[
    list[str] | None,
    typer.Option("-o", "--override", help="override a recipe field: -o train.optimizer.lr=0.01"),
]
RunsDir = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="where runs are stored (default: $DLAB_RUNS_DIR or ./runs)"),
]


@app.command()
def train(
    recipe: Annotated[
        str | None, typer.Argument(help="recipe file or shipped recipe name, e.g. mnist_cnn")
    ] = None,
    override: Overrides = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="continue this run directory from its last checkpoint"),
    ] = None,
    runs_dir: RunsDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            help="train data-parallel in N processes (torchrun, DDP; gloo on CPU, NCCL on GPU)",
        ),
    ] = 1,
) -> None:
    """Train a recipe into a new run directory (or resume one)."""
    from dlab.api import train as train_recipe

    if recipe is None and resume is None:
        raise DlabError(
            "train: give a recipe (e.g. dlab train recipes/mnist_cnn.yaml) or --resume RUN_DIR"
        )
    if recipe is not None and resume is not None:
        raise DlabError("train: give either a recipe or --resume RUN_DIR, not both")
    if nproc != 1:
        _train_in_processes(nproc, recipe, override or [], resume, runs_dir, quiet)
        return
    run = train_recipe(recipe, override or [], runs_dir=runs_dir, resume=resume, progress=not quiet)
    if os.environ.get("RANK", "0") == "0":  # a single process, or rank 0 of a torchrun job
        _print_run_summary(run)


def _train_in_processes(
    nproc: int,
    recipe: str | None,
    overrides: list[str],
    resume: Path | None,
    runs_dir: Path | None,
    quiet: bool,
) -> None:
    """The same command in N processes under torchrun, which stops all of them if one fails."""
    from dlab import distributed

    argv = ["train", *([recipe] if recipe else [])]
    for item in overrides:
        argv += ["-o", item]
    argv += ["--resume", str(resume)] if resume else []
    argv += ["--runs-dir", str(runs_dir)] if runs_dir else []
    argv += ["--quiet"] if quiet else []
    code = distributed.launch(nproc, argv)
    if code != 0:
        raise DlabError(
            f"train --nproc {nproc}: a process failed (exit code {code}), so torchrun stopped the "
            "others; its error is above. Continue from the last checkpoint with "
            "`dlab train --resume RUN_DIR` (any number of processes)"
        )


def _print_run_summary(run: Any) -> None:
    meta = run.dir.meta
    parts = [f"run {run.path}"]
    from dlab.tasks import task_of

    task = task_of(run.meta)
    for split, report in (meta.get("evaluation") or {}).items():
        shown = task.headline_of(report)
        parts.append(f"{split}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    parts.append(
        f"{meta.get('train_seconds', 0):.1f}s, {meta.get('samples_per_s', 0):,.0f} samples/s"
    )
    if meta.get("stop_reason") and meta["stop_reason"] != "completed":
        parts.append(meta["stop_reason"])
    _console().print("  ".join(parts), soft_wrap=True)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory")],
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
) -> None:
    """The run's metrics on a split: per-class table, perplexity, BLEU or forecast error, by task."""
    from dlab.api import load

    report = load(run).evaluate(split)
    console = _console()
    if "per_class" in report:
        table = Table(
            title=f"{run} — {split}: accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f}"
        )
        for column in ("class", "precision", "recall", "f1", "support"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for row in report["per_class"]:
            table.add_row(
                row["class"],
                f"{row['precision']:.4f}",
                f"{row['recall']:.4f}",
                f"{row['f1']:.4f}",
                str(row["support"]),
            )
        console.print(table)
    else:
        numbers = {
            k: v
            for k, v in report.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        console.print(
            f"{run} — {split}: " + "  ".join(f"{k} {v:.4g}" for k, v in numbers.items()),
            soft_wrap=True,
        )
        if "sample" in report:
            console.print(f"sample:\n{report['sample']}", highlight=False, markup=False)
        for example in report.get("examples", [])[:3]:
            console.print(
                f"  {example['source']}\n  -> {example['translation']}\n  (reference: {example['reference']})",
                markup=False,
            )
    console.print(f"saved {run / 'eval' / (split + '.json')}")


@app.command()
def generate(
    run: Annotated[Path, typer.Argument(help="run directory of a language or translation model")],
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="text to continue (or to translate)")
    ] = "",
    tokens: Annotated[
        int, typer.Option("--tokens", "-n", min=1, help="new tokens to generate")
    ] = 300,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="0: greedy; higher: more varied")
    ] = 0.8,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="sample only from the k most likely tokens")
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            "--top-p",
            min=0.0,
            max=1.0,
            help="sample from the smallest set with this much probability",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="make sampling repeatable")] = None,
    beam: Annotated[
        int, typer.Option(min=1, help="beam width for translation models (1: greedy)")
    ] = 4,
) -> None:
    """Continue a prompt with a language model, or translate it with a seq2seq model."""
    from dlab.api import load
    from dlab.tasks import task_of

    model_run = load(run)
    if "translate" in task_of(model_run.meta).verbs:
        if not prompt.strip():
            raise DlabError(
                "generate: a translation model needs --prompt, the sentence to translate"
            )
        sys.stdout.write(model_run.translate([prompt], beam=beam)[0] + "\n")
        return
    text = model_run.generate(
        prompt or None, tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )
    sys.stdout.write(prompt + text + "\n")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="run directory")],
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="PNG/JPEG images or .npy arrays")
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option("--text", "-t", help="a text to classify (text models; repeatable)"),
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", min=1, help="how many classes to show")
    ] = 3,
    resize: Annotated[bool, typer.Option(help="scale images to the model's input size")] = False,
    invert: Annotated[
        str, typer.Option(help="auto: match the training images' background; always; never")
    ] = "auto",
) -> None:
    """Predict the class of each input file or --text; prints the top-k with probabilities."""
    from dlab.api import load

    if invert not in ("auto", "always", "never"):
        raise DlabError(f"--invert: '{invert}' should be auto, always or never")
    console = _console()
    if bool(inputs) == bool(text):
        raise DlabError("predict: give input files, or --text for a text model (not both)")
    for prediction in load(run).predict(text or inputs, top_k=top_k, resize=resize, invert=invert):
        ranked = "  ".join(f"{label} {prob:.1%}" for label, prob in prediction.top)
        console.print(f"{prediction.source}: {prediction.label}   ({ranked})")


@app.command("list")
def list_things(
    what: Annotated[
        str, typer.Argument(help="models, datasets, recipes, optimizers, losses or schedulers")
    ],
) -> None:
    """List what is registered, one line each."""
    from dlab.catalog import catalog

    columns, rows = catalog(what)
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    _console().print(table)


@runs_app.command("list")
def runs_list(runs_dir: RunsDir = None) -> None:
    """Every run with its status and accuracy."""
    from dlab.runs import list_runs, runs_root

    runs = list(list_runs(runs_dir))
    if not runs:
        _console().print(f"no runs in {runs_root(runs_dir)} yet; try `dlab train demo`")
        return
    table = Table(title=f"runs in {runs_root(runs_dir)}")
    for column in ("run", "model", "data", "status", "epochs", "val acc", "test acc", "created"):
        table.add_column(column)
    for run in runs:
        s = run.summary()
        table.add_row(
            s["run"],
            s["model"],
            s["data"],
            s["status"],
            str(s["epochs"]),
            _number(s["val_accuracy"]),
            _number(s["test_accuracy"]),
            s["created"][:19],
        )
    _console().print(table)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[Path], typer.Argument(help="two or more run directories")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="where to write the comparison page")
    ] = Path("compare.html"),
) -> None:
    """Overlay the curves of several runs, and tabulate their final metrics and recipe differences."""
    from dlab.api import load
    from dlab.report import compare_runs

    path, columns, rows = compare_runs([load(r) for r in runs], output)
    table = Table(title="final metrics")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_number(v) if isinstance(v, float) else str(v) for v in row])
    _console().print(table)
    _console().print(f"wrote {path}")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="data set name, e.g. mnist")],
    mirror: Annotated[
        list[str] | None,
        typer.Option("--mirror", help="base URL to download from instead of the canonical mirrors"),
    ] = None,
) -> None:
    """Download a data set's files, verify their checksums, and put them in the data directory."""
    from dlab.catalog import fetch_dataset

    folder = fetch_dataset(name, mirror or None, console=_console())
    _console().print(f"{name}: verified files in {folder}")


@data_app.command("import")
def data_import(
    name: Annotated[str, typer.Argument(help="data set name, e.g. mnist")],
    source: Annotated[Path, typer.Argument(help="folder holding the data set's published files")],
) -> None:
    """Copy a data set's files from a folder into the data directory, verifying checksums."""
    from dlab.catalog import import_dataset

    folder = import_dataset(name, source)
    _console().print(f"{name}: verified and copied into {folder}")


@recipe_app.command("show")
def recipe_show(
    recipe: Annotated[str, typer.Argument(help="recipe file or name")], override: Overrides = None
) -> None:
    """Print the resolved recipe (every default filled in, overrides applied)."""
    from dlab.recipe import load_recipe

    sys.stdout.write(load_recipe(recipe, override or []).to_yaml())


@recipe_app.command("doc")
def recipe_doc(
    recipe: Annotated[
        str | None, typer.Argument(help="recipe whose components to document")
    ] = None,
) -> None:
    """Every recipe field with its default and meaning."""
    from dlab.catalog import recipe_fields

    table = Table()
    for column in ("field", "default", "meaning"):
        table.add_column(column)
    for row in recipe_fields(recipe):
        table.add_row(*row)
    _console().print(table)


@app.command("check")
def check_formulas(
    names: Annotated[
        list[str] | None, typer.Argument(help="formulas to check (default: all)")
    ] = None,
    list_only: Annotated[bool, typer.Option("--list", help="name the formulas and stop")] = False,
) -> None:
    """Compare every from-scratch formula (NumPy) with PyTorch: forward, gradients, finite differences."""
    from dlab.checks import CHECKS, FD_TOLERANCE, TOLERANCE, run_checks

    console = _console()
    if list_only:
        for name, (formula, _) in CHECKS.items():
            console.print(f"{name:22s} {formula}", markup=False)
        return
    results = run_checks(names or [])
    table = Table(
        title=f"dlab.scratch vs PyTorch (float64; pass: forward and gradient ≤ {TOLERANCE:g}, finite differences ≤ {FD_TOLERANCE:g})"
    )
    for column in ("formula", "", "shapes tried", "forward", "gradient", "finite diff.", "result"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.name,
            r.formula,
            "; ".join(r.shapes),
            f"{r.forward:.1e}",
            f"{r.gradient:.1e}",
            f"{r.finite_difference:.1e}",
            "[green]pass[/green]" if r.passed else "[red]FAIL[/red]",
        )
    console.print(table)
    failed = [r.name for r in results if not r.passed]
    if failed:
        console.print(f"{len(failed)} of {len(results)} failed: {', '.join(failed)}")
        raise typer.Exit(1)
    console.print(f"all {len(results)} formulas agree with PyTorch")


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
) -> None:
    """Serve a model over HTTP: /predict, /generate, /metadata, /metrics, and a page to try it."""
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
    )


@app.command()
def report(run: Annotated[Path, typer.Argument(help="run directory")]) -> None:
    """(Re)write the run's self-contained HTML report: curves, metrics, explanations, samples."""
    from dlab.api import load
    from dlab.report import write_report

    _console().print(f"wrote {write_report(load(run))}")


@app.command()
def lesson(
    name: Annotated[
        str | None, typer.Argument(help="lesson number or name; none: list them")
    ] = None,
) -> None:
    """Read a lesson: the formula, the from-scratch code (from the source), PyTorch's equivalent, an exercise."""
    from dlab.lessons import find, lesson_files, render

    if name is None:
        for path in lesson_files():
            title = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
            _console().print(f"{path.stem[:2]}  {title}", markup=False)
        return
    sys.stdout.write(render(find(name)))


@app.command()
def demo(runs_dir: RunsDir = None) -> None:
    """Train the seed CNN on 5,000 real MNIST digits (offline), evaluate, and predict one image."""
    from dlab.demo import run_demo

    run_demo(runs_dir=runs_dir, console=_console())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dlab` script: user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="dlab")  # typer reports its own usage errors and exits 2
    except DlabError as exc:
        sys.stderr.write(f"dlab: error: {exc}\n")
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        sys.stderr.write("dlab: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
