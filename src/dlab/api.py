"""dlab from Python: `train(recipe)`, `fit(model, data, ...)`, `load(run_dir)`.

The CLI calls these and nothing else, so everything it does can be done from a notebook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlab import data as datasets
from dlab import models, tracking
from dlab import run_steps as steps
from dlab._io import atomic_write_json, atomic_write_text, read_json
from dlab.data.arrays import as_bundle
from dlab.data.bundle import DataBundle, DataMeta
from dlab.data.inputs import load_input
from dlab.data.tokenizers import Tokenizer
from dlab.errors import (
    InputError,
    RecipeError,
    RunError,
)
from dlab.recipe import Recipe, TrainConfig, format_validation_error, load_recipe
from dlab.runs import RunDir
from dlab.tasks import task_of
from dlab.training import distributed
from dlab.training.callbacks import Callback
from dlab.training.checkpoint import load_weights
from dlab.training.state import seed_everything
from dlab.training.trainer import History, Trainer


@dataclass(frozen=True)
class Prediction:
    """The answer for one input: a classifier's top-k classes, or what the run's task answers."""

    source: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    answer: dict[str, Any] | None = None  # the task's answer (what `dlab serve` returns)

    @property
    def label(self) -> str:
        """The most likely class (or the task's label)."""
        if self.top:
            return self.top[0][0]
        return str((self.answer or {}).get("label", ""))

    @classmethod
    def of(cls, source: str, answer: dict[str, Any]) -> Prediction:
        top = list((answer.get("probabilities") or {}).items())
        return cls(source, top, answer)


class Run:
    """A trained (or training) run, opened from its directory."""

    def __init__(self, run_dir: RunDir):
        self.dir = run_dir
        self.recipe: Recipe = run_dir.recipe
        self._model: nn.Module | None = None

    @property
    def path(self) -> Path:
        """The run directory."""
        return self.dir.path

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.dir.status!r})"

    @property
    def meta(self) -> DataMeta:
        """Data metadata saved at training time."""
        return self.dir.data_meta

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The tokenizer the run was trained with (text models), or None."""
        path = self.path / RunDir.TOKENIZER
        return Tokenizer.load(path) if path.is_file() else None

    @property
    def history(self) -> History:
        """Epoch records from metrics.jsonl."""
        return History(self.dir.epochs())

    @property
    def model(self) -> nn.Module:
        """The trained model (built from the recipe, weights loaded), in eval mode on the CPU."""
        if self._model is None:
            if not self.dir.weights.is_file():
                raise RunError(
                    f"{self.path}: no model.safetensors (status {self.dir.status}); "
                    f"finish it with `dlab train --resume {self.path}`"
                )
            model = models.build(self.recipe.model, self.meta)
            compression = self.dir.meta.get("compression") or {}
            if compression.get("method") == "quantize":  # re-quantize exactly as measured
                from dlab.compress import quantize

                example = (
                    torch.zeros(1, *self.meta.input_shape)
                    if self.meta.input_kind != "tokens"
                    else None
                )
                self._model = quantize.load(
                    model, compression["mode"], self.dir.weights, example
                ).eval()
            else:
                self._model = load_weights(model, self.dir.weights).eval()
        return self._model

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The precision the run trained in: bf16 autocast for a bf16 recipe (not for a
        quantized model, whose integer kernels take float32), else nothing."""
        quantized = (self.dir.meta.get("compression") or {}).get("method") == "quantize"
        if self.recipe.train.precision == "bf16" and not quantized:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def evaluate(
        self, split: str = "test", write: bool = True, bundle: DataBundle | None = None
    ) -> dict[str, Any]:
        """The task's report on `split` (see dlab.tasks); written to eval/<split>.json."""
        bundle = bundle or datasets.build(self.recipe.data, self.recipe.seed)
        task = task_of(bundle.meta)
        with self.autocast():
            report = task.evaluate(self, bundle, split)
        report["split"] = split
        if write:
            out = self.path / "eval"
            out.mkdir(exist_ok=True)
            atomic_write_json(out / f"{split}.json", report)
            if "confusion_matrix" in report:
                from dlab.report.plots import save_confusion_matrix  # matplotlib: only when writing

                classes = bundle.meta.classes
                save_confusion_matrix(
                    report["confusion_matrix"],
                    classes,
                    out / f"{split}_confusion.png",
                    title=f"{self.recipe.name}: {split}",
                )
            headline = {**task.headline_of(report), "samples": report["samples"]}
            self.dir.update_meta(
                **{"evaluation": {**self.dir.meta.get("evaluation", {}), split: headline}},
                **({"test": headline} if split == "test" else {}),
            )
        return report

    def write_report(self) -> Path | None:
        """Write report.html; a failure becomes a warning, never a lost run."""
        import warnings

        from dlab.report import write_report

        try:
            return write_report(self)
        except Exception as exc:  # the run itself is complete and saved
            warnings.warn(
                f"{self.path}: the report could not be written ({exc}); retry with `dlab report {self.path}`",
                stacklevel=2,
            )
            return None

    def generate(
        self,
        prompt: str | None = None,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> str:
        """Continue `prompt` with a language model; temperature 0 is greedy, `seed` makes it repeatable."""
        task_of(self.meta).require("generate")
        tokenizer = self.tokenizer
        ids = self._prompt_ids(prompt)
        if not ids:
            raise InputError("generate: the prompt is empty after tokenization")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        out = self.model.generate(
            torch.tensor([ids]),
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )
        return tokenizer.decode(out[0, len(ids) :].tolist())

    def _prompt_ids(self, prompt: str | None) -> list[int]:
        """Token ids of `prompt`; with no prompt, a newline, or the vocabulary's first symbol."""
        tokenizer = self.tokenizer
        if prompt:
            return tokenizer.encode(prompt)
        try:
            return tokenizer.encode("\n") or [0]
        except InputError:  # a text without line breaks
            return [0]

    def translate(self, texts: Sequence[str], beam: int = 4) -> list[str]:
        """Translate sentences with a seq2seq model (beam search; beam 1 is greedy)."""
        from dlab.data.sequences import pad_sequences
        from dlab.data.tokenizers import EOS, PAD

        task_of(self.meta).require("translate")
        limit = int(self.meta.details.max_length or 64)
        tokenizer = self.tokenizer
        source, _ = pad_sequences([tokenizer.encode(t)[:limit] or [EOS] for t in texts], PAD, limit)
        outputs = (
            self.model.greedy(source) if beam == 1 else self.model.beam_search(source, beam=beam)
        )
        return [tokenizer.decode(ids) for ids in outputs]

    def test_report(self) -> dict[str, Any]:
        """The test-split report written at the end of training (computed now if missing)."""
        saved = self.path / "eval" / "test.json"
        if saved.is_file():
            return read_json(saved)
        return self.evaluate("test")

    def predict(
        self,
        inputs: Sequence[str | Path] | torch.Tensor,
        top_k: int = 3,
        resize: bool = False,
        invert: str = "auto",
    ) -> list[Prediction]:
        """Top-k classes for files (PNG/JPEG/.npy), texts (text models), cases of a table model
        (.csv/.json files, a DataFrame or dicts of column values), or a preprocessed batch tensor."""
        meta = self.meta
        task_of(meta).require("predict")
        if isinstance(inputs, torch.Tensor):
            batch, sources = inputs, [f"#{i}" for i in range(len(inputs))]
        elif meta.input_kind == "table":
            batch, sources = self._encode_cases(inputs)
        elif meta.input_kind == "tokens":
            batch, sources = self._encode_texts(list(inputs)), [str(t) for t in inputs]
        else:
            if not inputs:
                raise InputError("predict: no input files given")
            batch = torch.stack([load_input(p, meta, resize=resize, invert=invert) for p in inputs])
            sources = [str(p) for p in inputs]
        if meta.input_kind != "tokens" and tuple(batch.shape[1:]) != tuple(meta.input_shape):
            raise InputError(
                f"predict: inputs shaped {tuple(batch.shape[1:])}, the model takes {tuple(meta.input_shape)}"
            )
        answers = task_of(meta).predict(self, batch, top_k)
        return [
            Prediction.of(source, answer) for source, answer in zip(sources, answers, strict=True)
        ]

    def sample_grid(self, n: int, path: str | Path, seed: int | None = None) -> Path:
        """`n` images drawn by a generative model (a VAE), saved as one PNG grid at `path`."""
        from dlab.report.images import save_grid

        task_of(self.meta).require("generate")
        if not hasattr(self.model, "sample"):
            raise InputError(
                f"generate: {self.recipe.model.name} encodes images but cannot draw new ones "
                "(a vae can)"
            )
        generator = torch.Generator().manual_seed(seed if seed is not None else 0)
        return save_grid(self.model.sample(n, generator), Path(path))

    def draw(self, inputs: Sequence[str | Path], path: str | Path) -> Path:
        """A picture of the answers for input files, as one PNG at `path`: boxes drawn on a
        scene, a coloured mask, or each image above an autoencoder's reconstruction."""
        if not inputs:
            raise InputError("--out: no input files to draw the answers for")
        batch = torch.stack([load_input(p, self.meta) for p in inputs])
        return task_of(self.meta).draw(self, batch, Path(path))

    def reconstruct(self, inputs: Sequence[str | Path], path: str | Path) -> Path:
        """Each input image beside the model's reconstruction of it, as one PNG at `path`."""
        return self.draw(inputs, path)

    def _encode_cases(self, inputs: Any) -> tuple[torch.Tensor, list[str]]:
        from dlab.data.tables import encode, read_cases

        details = self.meta.details
        frame, sources = read_cases(inputs, details.columns, details.target)
        return encode(frame, details.columns, "predict", strict=True)[0], sources

    def explain(self, inputs: Any) -> list[dict[str, Any]]:
        """Why a table model decided as it did, per case: each column's value and how far the
        probability of the positive (else the predicted) class moves when that column is set
        to its typical value; largest first."""
        from dlab.data.tables import decode_value
        from dlab.tasks.tabular import attributions

        task_of(self.meta).require("predict")
        if self.meta.input_kind != "table":
            raise InputError("--explain: per-column explanations are for table models")
        batch, sources = self._encode_cases(inputs)
        details, classes = self.meta.details, self.meta.classes
        with torch.no_grad():
            predicted = self.model(batch).argmax(-1)
        out = []
        for i, source in enumerate(sources):
            cls = details.positive if details.positive is not None else int(predicted[i])
            scores = attributions(self.model, batch[i : i + 1], details, cls)[0]
            columns = [
                {
                    "column": c.name,
                    "value": decode_value(c, float(batch[i, j])),
                    "effect": round(float(scores[j]), 4),
                }
                for j, c in enumerate(details.columns)
            ]
            columns.sort(key=lambda c: -abs(c["effect"]))
            out.append({"source": source, "class": classes[cls], "columns": columns})
        return out

    def recommender(self) -> Any:
        """The run's model with its catalogue and training ratings (recommender runs)."""
        from dlab.data.ratings import SEEN_FILE, load_seen
        from dlab.tasks.recommender import Recommender

        task_of(self.meta).require("recommend")
        return Recommender(self.model, self.meta, *load_seen(self.path / SEEN_FILE))

    def recommend(self, user: Any, k: int = 10, exclude_seen: bool = True) -> dict[str, Any]:
        """The top `k` items for `user` (an original id), with titles, scores and genres."""
        return self.recommender().recommend(user, k, exclude_seen)

    def rate(self, user: Any, item: Any) -> dict[str, Any]:
        """The predicted rating (a ranking score for implicit feedback) of `user` for `item`."""
        return self.recommender().rate(user, item)

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Token ids of `texts`, truncated and padded exactly as in training."""
        from dlab.data.sequences import pad_sequences
        from dlab.data.tokenizers import UNK

        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise InputError("predict: give non-empty texts for a text model")
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise RunError(f"{self.path}: a text model without tokenizer.json; retrain it")
        limit = int(getattr(self.meta.details, "max_length", None) or 512)
        ids = [tokenizer.encode(t, specials=True)[:limit] or [UNK] for t in texts]
        return pad_sequences(ids, tokenizer.pad_id or 0, limit)[0]


def load(run_dir: str | Path) -> Run:
    """Open a run directory."""
    return Run(RunDir.open(run_dir))


def train(
    recipe: str | Path | dict | Recipe,
    overrides: Sequence[str] = (),
    *,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    evaluate_test: bool = True,
    report: bool = True,
    model: nn.Module | None = None,
    loss: nn.Module | None = None,
    meta: dict[str, Any] | None = None,
) -> Run:
    """Train a recipe into a new run directory (or continue `resume`), evaluate it, and write its report.

    `model` starts from an existing module (fine-tuning a pruned model); `loss` replaces the recipe's
    (distillation); `meta` is recorded in meta.json (where a compressed run came from).
    """
    if resume is not None:
        run_dir, recipe_obj, checkpoint = steps.resumable(resume, overrides)
    else:
        recipe_obj, run_dir, checkpoint = load_recipe(recipe, overrides), None, None
    if tracking.wanted(recipe_obj):
        tracking.check(recipe_obj)  # a tracking server that is down: one line, before any work

    # a torchrun rank (or None); rank 0 holds the run folder against other processes
    with distributed.joined(recipe_obj.train.device) as job, contextlib.ExitStack() as held:
        main = job is None or job.main
        if run_dir is None:  # a torchrun job continues the unfinished run of its id, if any
            run_dir, recipe_obj, checkpoint = steps.elastic_resume(recipe_obj, runs_dir, job)
        steps.hold(held, run_dir, main)
        seed_everything(recipe_obj.seed)
        bundle = datasets.build(recipe_obj.data, recipe_obj.seed)
        model = model if model is not None else models.build(recipe_obj.model, bundle.meta)
        if run_dir is None:
            run_dir = steps.new_run_dir(recipe_obj, bundle, runs_dir, job)
            steps.hold(held, run_dir, main)
        elif overrides and main:
            atomic_write_text(run_dir.path / RunDir.RECIPE, recipe_obj.to_yaml())

        trainer = Trainer(
            model,
            bundle,
            recipe_obj.train,
            seed=recipe_obj.seed,
            out_dir=run_dir.path,
            recipe_yaml=recipe_obj.to_yaml(),
            callbacks=callbacks,
            progress=progress,
            loss=loss,
        )
        if checkpoint is not None:
            trainer.resume(checkpoint)
        if not main:  # rank 0 keeps the run folder; the others only train
            trainer.fit()
            trainer.strategy.full_weights(trainer.model)  # FSDP: send rank 0 the slices
            return Run(run_dir)
        steps.record_start(run_dir, trainer, bundle, model, recipe_obj.seed, job, meta)
        return steps.fit_to_report(trainer, run_dir, bundle, recipe_obj, evaluate_test, report)


def fit(
    model: nn.Module,
    data: Any,
    *,
    optimizer: str | dict = "adam",
    loss: str | dict = "cross_entropy",
    metrics: Sequence[str] | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float | None = None,
    val_data: tuple[Any, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    out_dir: str | Path | None = None,
    **train_options: Any,
) -> History:
    """Keras-style training of any nn.Module: `data` is (inputs, targets) arrays, a DataBundle, or a data set name.

    `metrics` defaults to accuracy for classification and mae for regression; `train_options` are any
    other `train:` recipe fields (scheduler, grad_clip, early_stopping, ...).
    """
    optimizer_section = {"name": optimizer} if isinstance(optimizer, str) else dict(optimizer)
    if lr is not None:
        optimizer_section["lr"] = lr
    bundle = as_bundle(data, val_data, batch_size, seed, loss)
    if metrics is None:
        metrics = list(task_of(bundle.meta).fit_metrics)
    section = {
        "epochs": epochs,
        "optimizer": optimizer_section,
        "loss": loss,
        "metrics": list(metrics),
        **train_options,
    }
    try:
        config = TrainConfig.model_validate(section)
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            raise RecipeError(
                format_validation_error(exc, section, "fit").replace("fit: ", "fit: train.", 1)
            ) from None
        raise
    torch.manual_seed(seed)
    trainer = Trainer(
        model, bundle, config, seed=seed, out_dir=out_dir, callbacks=callbacks, progress=progress
    )
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    return trainer.fit()
