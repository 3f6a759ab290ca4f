"""`dlab export RUN --format onnx`: an ONNX model, verified against PyTorch with onnxruntime.

Exporter: torch.onnx's dynamo exporter (torch.export, opset 20 on torch 2.13), falling back to the
TorchScript-based exporter (opset 17) for models torch.export cannot trace. Recurrent models take
the TorchScript exporter directly (torch.export unrolls them at the example's length), and text
ones export through a packing-free path with the same numbers (neither exporter handles packed
sequences on torch 2.13). The batch axis is dynamic, and so is the sequence length of token inputs. After
export, onnxruntime runs real test inputs (a different batch size and length from the export's)
and must match PyTorch to 1e-4, or the export fails and the file is removed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlab.errors import DlabError
from dlab.extras import require

TOLERANCE = 1e-4
LEGACY_OPSET = 17


@dataclass
class ExportResult:
    """Where the model went and how well onnxruntime reproduces it."""

    path: str
    exporter: str
    opset: int
    inputs: list[str]
    dynamic_axes: dict[str, list[str]]
    max_abs_error: float
    checked_samples: int


def input_names(meta: Any) -> list[str]:
    """ONNX input names, by the data's kind."""
    from dlab.tasks import task_of

    several = task_of(meta).input_names
    if several:
        return list(several)
    return ["tokens"] if meta.input_kind == "tokens" else ["input"]


def _samples(run: Any, count: int, trim: int | None) -> tuple:
    """Real inputs from the run's test (or validation) split, else random ones shaped like them."""
    try:
        from dlab.data import build

        bundle = build(run.recipe.data, run.recipe.seed)
        loader = bundle.test or bundle.val or bundle.train
        x, _ = next(loader.epoch(0))
    except DlabError:  # the data is not on this machine
        from dlab.models.examples import example_batch

        x, _ = example_batch(run.meta, count, seed=1)
    args = x if isinstance(x, tuple) else (x,)
    args = tuple(a[:count] for a in args)
    if trim is not None:  # a length other than the export's, to prove the axis is dynamic
        args = tuple(a[:, :trim] for a in args)
    return args


def _dynamic(meta: Any, args: tuple) -> tuple[tuple, dict[str, dict[int, str]]]:
    batch = torch.export.Dim("batch")
    names = input_names(meta)
    if meta.input_kind == "tokens":
        details = meta.details
        longest = int(
            getattr(details, "max_length", None)
            or getattr(details, "block_size", None)
            or args[0].shape[1]
        )
        length = torch.export.Dim("length", max=max(longest, 2))
        if len(names) == 2:  # source and target of a seq2seq model
            shapes = (
                {0: batch, 1: torch.export.Dim("source_length", max=longest)},
                {0: batch, 1: torch.export.Dim("target_length", max=longest)},
            )
            axes = {
                names[0]: {0: "batch", 1: "source_length"},
                names[1]: {0: "batch", 1: "target_length"},
            }
        else:
            shapes = ({0: batch, 1: length},)
            axes = {names[0]: {0: "batch", 1: "length"}}
    else:
        shapes = ({0: batch},)
        axes = {names[0]: {0: "batch"}}
    return shapes, axes


def export_onnx(run_path: str | Path, output: str | Path | None = None) -> ExportResult:
    """Export a run's model to ONNX and verify it with onnxruntime."""
    require("export", "export")
    import onnxruntime

    from dlab.api import load

    run = load(run_path)
    if (run.dir.meta.get("compression") or {}).get("method") == "quantize":
        raise DlabError(
            f"export: {run.path} is torch-quantized; export its float source ({run.dir.meta.get('compressed_from')}) instead"
        )
    model = run.model.eval()
    meta = run.meta
    path = Path(output) if output else run.path / "model.onnx"
    export_args = _samples(run, 4, None)
    shapes, axes = _dynamic(meta, export_args)
    names = input_names(meta)
    exporter, opset = _export(model, export_args, path, names, shapes, axes)
    check_args = _samples(
        run,
        64,
        min(20, export_args[0].shape[1] - 1)
        if meta.input_kind == "tokens" and export_args[0].shape[1] > 4
        else None,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: a.numpy() for i, a in zip(session.get_inputs(), check_args, strict=True)}
    produced = session.run(None, feed)[0]
    with torch.no_grad():
        expected = model(*check_args).numpy()
    error = float(np.abs(produced - expected).max())
    if not error <= TOLERANCE * max(1.0, float(np.abs(expected).max())):
        path.unlink(missing_ok=True)
        raise DlabError(
            f"export: onnxruntime differs from PyTorch by {error:.2e} (> {TOLERANCE:g}); the ONNX file was removed"
        )
    result = ExportResult(
        str(path),
        exporter,
        opset,
        names,
        {k: list(v.values()) for k, v in axes.items()},
        error,
        int(check_args[0].shape[0]),
    )
    run.dir.update_meta(export=asdict(result))
    return result


def _export(model, args, path: Path, names: list[str], shapes, axes) -> tuple[str, int]:
    """(exporter, opset): dynamo first, the TorchScript exporter where torch.export cannot trace."""
    logging.getLogger("torch.onnx").setLevel(
        logging.ERROR
    )  # "torchvision is not installed. Skipping ..."
    noise = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(noise),
        contextlib.redirect_stderr(noise),
    ):
        warnings.simplefilter("ignore")
        traceable = [m for m in model.modules() if hasattr(m, "exporting")]
        for module in traceable:  # recurrent models: no packed sequences, same numbers
            module.exporting = True
        try:
            return _export_traced(model, args, path, names, shapes, axes)
        finally:
            for module in traceable:
                module.exporting = False


def _export_traced(model, args, path: Path, names: list[str], shapes, axes) -> tuple[str, int]:
    # torch.export unrolls recurrent layers at the example's length, so they take the TorchScript
    # exporter, which writes ONNX's own LSTM/GRU/RNN operators with a dynamic length
    if not any(isinstance(m, torch.nn.RNNBase) for m in model.modules()):
        try:
            program = torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=names,
                output_names=["logits"],
            )
            opset = (
                int(next(iter(program.model.opset_imports.values()))) if program is not None else 0
            )
            return "dynamo (torch.export)", opset
        except Exception:
            # a failed trace leaves state behind that breaks the TorchScript exporter: reset it
            path.unlink(missing_ok=True)
            torch._dynamo.reset()
    try:
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=LEGACY_OPSET,
        )
        return "torchscript", LEGACY_OPSET
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise DlabError(
            f"export: neither ONNX exporter could export this model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
