"""What the server computes with: the run's PyTorch model, or its ONNX export through onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlab.data.bundle import DataMeta
from dlab.errors import DlabError, InputError
from dlab.extras import require
from dlab.tasks import task_of


class TorchBackend:
    """The run's own model, on the CPU."""

    name = "torch"

    def __init__(self, run: Any):
        self.run, self.meta, self.recipe = run, run.meta, run.recipe
        self.model = run.model.eval()
        self.tokenizer = run.tokenizer

    @torch.no_grad()
    def outputs(self, batch: torch.Tensor) -> np.ndarray:
        """The model's outputs for a batch (logits of a classifier)."""
        return self.model(batch).float().numpy()

    def generate(
        self,
        prompt: str | None,
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seed: int | None,
    ) -> str:
        return self.run.generate(
            prompt, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
        )

    def translate(self, text: str, beam: int) -> str:
        return self.run.translate([text], beam=beam)[0]


class OnnxBackend:
    """An ONNX model run by onnxruntime (the metadata comes from its run directory, if it has one)."""

    name = "onnxruntime"

    def __init__(self, path: Path, run: Any | None):
        require("export", "serve --backend onnx", ("onnxruntime",))
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.run = run
        self.tokenizer = run.tokenizer if run is not None else None
        self.recipe = run.recipe if run is not None else None
        self.meta = run.meta if run is not None else _meta_from_graph(self.session, path)
        if "predict" not in task_of(self.meta).verbs or self.meta.input_kind == "pairs":
            raise DlabError(
                "serve --backend onnx serves classifiers; serve generation models with the torch backend"
            )

    def outputs(self, batch: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.inputs[0]: batch.numpy()})[0]

    def generate(self, *args: Any) -> str:
        raise InputError("this server's model is a classifier")

    translate = generate


def _meta_from_graph(session: Any, path: Path) -> DataMeta:
    """Minimal metadata of a bare .onnx file: its input shape, classes by index."""
    shape = session.get_inputs()[0].shape
    classes = session.get_outputs()[0].shape[-1]
    if not all(isinstance(d, int) for d in shape[1:]) or not isinstance(classes, int):
        raise DlabError(
            f"{path}: a bare ONNX file needs fixed input and output sizes; serve its run directory instead"
        )
    kind = "image" if len(shape) == 4 else "vector"
    return DataMeta(
        dataset=path.stem,
        input_kind=kind,
        input_shape=tuple(shape[1:]),
        num_classes=classes,
        classes=[str(i) for i in range(classes)],
    )


def load_backend(target: str | Path, backend: str = "auto") -> TorchBackend | OnnxBackend:
    """A backend for a run directory or a .onnx file; 'auto' prefers the torch model of a run."""
    from dlab.api import load

    target = Path(target)
    if target.suffix == ".onnx":
        if not target.is_file():
            raise DlabError(f"{target}: no such ONNX file")
        beside = target.parent
        run = load(beside) if (beside / "meta.json").is_file() else None
        return OnnxBackend(target, run)
    run = load(target)
    if backend == "onnx":
        onnx = run.path / "model.onnx"
        if not onnx.is_file():
            raise DlabError(f"{run.path}: no model.onnx; run `dlab export {run.path}` first")
        return OnnxBackend(onnx, run)
    if backend not in ("auto", "torch"):
        raise DlabError(f"--backend: '{backend}' should be torch, onnx or auto")
    return TorchBackend(run)


def describe(backend: TorchBackend | OnnxBackend) -> dict[str, Any]:
    """GET /metadata."""
    meta = backend.meta
    summary: dict[str, Any] = {
        "backend": backend.name,
        "task": meta.task,
        "verbs": list(task_of(meta).verbs),  # what the model answers: the page picks its form by it
        "input_kind": meta.input_kind,
        "input_shape": list(meta.input_shape),
        "classes": meta.classes,
        "dataset": meta.dataset,
    }
    audio = meta.audio
    if audio is not None:  # a sound model: the page records or uploads WAV at this rate
        summary["audio"] = audio.model_dump()
    if backend.recipe is not None:
        recipe = backend.recipe
        summary["recipe"] = {
            "name": recipe.name,
            "model": recipe.model.name,
            "data": recipe.data.name,
            "description": recipe.description,
        }
    if backend.run is not None:
        test = backend.run.dir.meta.get("test") or {}
        summary["test_metrics"] = json.loads(json.dumps(test))
    return summary
