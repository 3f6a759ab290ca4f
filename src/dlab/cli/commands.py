"""train, evaluate, generate, predict, list, report and demo."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlab.cli.app import Overrides, RunsDir, _console, _print_run_summary, app
from dlab.errors import DlabError


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
    nnodes: Annotated[
        int,
        typer.Option(
            "--nnodes", help="machines in the job: start the same command on each (with --master)"
        ),
    ] = 1,
    master: Annotated[
        str | None,
        typer.Option(
            "--master", help="HOST:PORT of the rendezvous, one machine every node reaches"
        ),
    ] = None,
    max_restarts: Annotated[
        int,
        typer.Option(
            "--max-restarts",
            help="restart the whole job up to N times after a process fails; it resumes from the last checkpoint",
        ),
    ] = 0,
) -> None:
    """Train a recipe into a new run directory (or resume one)."""
    from dlab.api import train as train_recipe

    if recipe is None and resume is None:
        raise DlabError("train: give a recipe (e.g. dlab train mnist_cnn) or --resume RUN_DIR")
    if recipe is not None and resume is not None:
        raise DlabError("train: give either a recipe or --resume RUN_DIR, not both")
    if nproc != 1 or nnodes != 1 or master is not None or max_restarts:
        from dlab.training.distributed import Nodes

        nodes = Nodes(nnodes, master, max_restarts)
        _train_in_processes(nproc, recipe, override or [], resume, runs_dir, quiet, nodes)
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
    nodes: Any,
) -> None:
    """The same command in N processes (per machine) under torchrun, which stops all of them if
    one fails, and restarts them all up to --max-restarts times."""
    from dlab.training import distributed

    argv = ["train", *([recipe] if recipe else [])]
    for item in overrides:
        argv += ["-o", item]
    argv += ["--resume", str(resume)] if resume else []
    argv += ["--runs-dir", str(runs_dir)] if runs_dir else []
    argv += ["--quiet"] if quiet else []
    import dataclasses

    nodes = dataclasses.replace(nodes, job_id=_job_id(recipe, overrides, resume))
    count, master, restarts = nodes.count, nodes.master, nodes.max_restarts
    code = distributed.launch(nproc, argv, nodes)
    if code != 0:
        after = f" and {restarts} restart(s)" if restarts else ""
        again = (
            "start the same command on every node again to continue it"
            if master
            else "continue from the last checkpoint with `dlab train --resume RUN_DIR`"
        )
        raise DlabError(
            f"train --nproc {nproc}"
            + (f" --nnodes {count}" if master else "")
            + f": a process failed (exit code {code}){after}, so torchrun stopped the others; "
            f"its error is above. The run keeps its last checkpoint: {again} (any number of "
            "processes)"
        )


def _job_id(recipe: str | None, overrides: list[str], resume: Path | None) -> str:
    """The torchrun job id: the same on every node for the same command, so that the nodes
    meet, and a new one for another recipe or other overrides (a run of this id that did not
    complete is continued)."""
    import hashlib

    from dlab.recipe import load_recipe

    if resume is not None:
        text, name = str(resume.resolve()), resume.name
    else:
        loaded = load_recipe(recipe, overrides)
        text, name = loaded.to_yaml(), loaded.name
    return f"dlab-{name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


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
    out: Annotated[
        Path | None, typer.Option(help="image generators (a VAE): the PNG grid of -n samples")
    ] = None,
) -> None:
    """Continue a prompt with a language model, translate it with a seq2seq model, or draw -n
    new images from a VAE into --out."""
    from dlab.api import load
    from dlab.tasks import task_of

    model_run = load(run)
    if model_run.meta.input_kind == "image":
        if out is None:
            raise DlabError("generate: an image model writes its samples to --out grid.png")
        path = model_run.sample_grid(tokens, out, seed=seed)
        _console().print(f"wrote {tokens} samples to {path}")
        return
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
    user: Annotated[
        str | None, typer.Option(help="recommenders: the user's id (with --item)")
    ] = None,
    item: Annotated[str | None, typer.Option(help="recommenders: the item's id")] = None,
    explain: Annotated[
        bool, typer.Option(help="table models: how much each column moved the decision")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="a PNG of the answers: boxes drawn on each scene, a coloured mask, or each "
            "image above an autoencoder's reconstruction"
        ),
    ] = None,
) -> None:
    """Predict the class of each input file or --text (top-k with probabilities), each case of
    a table model (.csv/.json), or a recommender's rating of --item by --user."""
    from dlab.api import load

    if invert not in ("auto", "always", "never"):
        raise DlabError(f"--invert: '{invert}' should be auto, always or never")
    console = _console()
    if user is not None or item is not None:
        if user is None or item is None or inputs or text:
            raise DlabError("predict: a recommender takes --user ID and --item ID, nothing else")
        console.print(json.dumps(load(run).rate(user, item), ensure_ascii=False))
        return
    if bool(inputs) == bool(text):
        raise DlabError("predict: give input files, or --text for a text model (not both)")
    loaded = load(run)
    predictions = loaded.predict(text or inputs, top_k=top_k, resize=resize, invert=invert)
    explained = None
    if explain:
        with warnings.catch_warnings():  # predict has already warned about these cases
            warnings.simplefilter("ignore")
            explained = loaded.explain(inputs)
    if out is not None:
        console.print(f"wrote {loaded.draw(inputs or [], out)}")
    for k, prediction in enumerate(predictions):
        _print_prediction(console, prediction)
        if explained:
            _print_explanation(console, explained[k])


def _print_prediction(console: Any, prediction: Any) -> None:
    """One input's answer: the top classes, a detector's boxes (one line each), or the task's
    answer as JSON (pictures, such as a mask, go to --out instead)."""
    if prediction.top:
        ranked = "  ".join(f"{label} {prob:.1%}" for label, prob in prediction.top)
        console.print(f"{prediction.source}: {prediction.label}   ({ranked})")
    elif "boxes" in (prediction.answer or {}):
        console.print(f"{prediction.source}: {prediction.label}")
        for found in prediction.answer["boxes"]:
            corners = " ".join(f"{v:g}" for v in found["box"])
            console.print(f"  {found['class']}  {found['score']:.3f}  {corners}")
    else:
        shown = {k: v for k, v in (prediction.answer or {}).items() if not k.endswith("_png")}
        console.print(f"{prediction.source}: {json.dumps(shown)}")


def _print_explanation(console: Any, explanation: dict[str, Any]) -> None:
    """One case's columns, the largest effect on P(class) first."""
    from rich.table import Table

    table = Table(title=f"what moved P({explanation['class']})", title_justify="left")
    for name in ("column", "value", "effect"):
        table.add_column(name, justify="right" if name == "effect" else "left")
    for c in explanation["columns"]:
        table.add_row(c["column"], c["value"], f"{c['effect']:+.3f}")
    console.print(table)


@app.command()
def recommend(
    run: Annotated[Path, typer.Argument(help="run directory of a recommender")],
    user: Annotated[str, typer.Option(help="the user's id, as in the data")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="how many items")] = 10,
    exclude_seen: Annotated[
        bool, typer.Option(help="leave out what the user rated in training")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
) -> None:
    """The top-k items for a user: titles, scores and genres (and what they rated highest)."""
    from rich.table import Table

    from dlab.api import load

    answer = load(run).recommend(user, k, exclude_seen)
    console = _console()
    if as_json:
        console.print_json(json.dumps(answer, ensure_ascii=False))
        return
    if "fallback" in answer:
        console.print(f"[yellow]{answer['fallback']}[/yellow]")
    for heading, rows, score in (
        (f"user {user} rated highest", answer.get("liked", []), "rating"),
        (f"recommended for user {user}", answer["items"], "score"),
    ):
        if not rows:
            continue
        table = Table(title=heading, title_justify="left")
        for column in ("#", "title", score, "genres"):
            table.add_column(column, justify="right" if column in ("#", score) else "left")
        for n, row in enumerate(rows, 1):
            table.add_row(str(n), row["title"], f"{row['score']:.3f}", ", ".join(row["genres"]))
        console.print(table)


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


@app.command()
def report(run: Annotated[Path, typer.Argument(help="run directory")]) -> None:
    """(Re)write the run's self-contained HTML report: curves, metrics, explanations, samples."""
    from dlab.api import load
    from dlab.report import write_report

    _console().print(f"wrote {write_report(load(run))}")


@app.command()
def demo(runs_dir: RunsDir = None) -> None:
    """Train the seed CNN on 5,000 real MNIST digits (offline), evaluate, and predict one image."""
    from dlab.demo import run_demo

    run_demo(runs_dir=runs_dir, console=_console())
