"""Tasks: what each kind of learning problem owns, in one file per task.

A task (classification, regression, language_model, seq2seq, ...) says how its batches are scored
during training, which metrics headline its runs (the one list that the CLI, the Python API and
the report read), how a split is evaluated, which inference verbs it answers and which sections
of a run's report show its results.
Code outside this package asks the run's task instead of comparing task names, so a new task is
one new file here plus its data and models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from dlab.errors import DataError, InputError
from dlab.registry import TASKS

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.sections import Section

# the command a user types for each inference verb (the CLI's generate also translates)
COMMANDS = {
    "predict": "dlab predict",
    "generate": "dlab generate",
    "translate": "dlab generate",
    "recommend": "dlab recommend",
}


class Details(BaseModel):
    """What a task needs to know about its data beyond shapes and classes (typed, per task);
    saved in meta.json with the rest of the data's metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Tokens(Details):
    """Token ids in, for every task that reads text."""

    vocab_size: int
    pad_id: int | None = None  # padding id (None: sequences are never padded)
    max_length: int | None = None  # the longest sequence the data was cut to
    tokenizer: str | None = None  # the tokenizer's kind (char, bpe, ...)


class Task:
    """The interface every task implements; subclasses set the class attributes."""

    name: ClassVar[str]
    # the typed details of this task's data (DataMeta.details)
    Details: ClassVar[type[Details]] = Details
    # the metrics that summarise a run of this task, in the order they are shown
    headline: ClassVar[tuple[str, ...]]
    # what `dlab.fit` tracks per epoch when the caller names no metrics
    fit_metrics: ClassVar[tuple[str, ...]] = ()
    # the trainer counts correct predictions (argmax over the last dimension)
    scores_accuracy: ClassVar[bool] = False
    # targets are token sequences padded with IGNORE, which score nothing
    padded_targets: ClassVar[bool] = False
    # the inference verbs this task answers, the first being its main one
    verbs: ClassVar[tuple[str, ...]] = ()
    # one class label per input: compression compares accuracy, federated runs split by label
    labels_inputs: ClassVar[bool] = False
    # a prediction at every position (next token), so a model may read only the past
    predicts_every_step: ClassVar[bool] = False
    # an output for every input step (frame-wise symbols for CTC); the model may read both ways
    outputs_every_step: ClassVar[bool] = False
    # the transformers Auto class that loads a pretrained model for this task
    hf_auto_class: ClassVar[str | None] = None
    # inputs are padded with id 0 (which a report drops when it shows them)
    padded_inputs: ClassVar[bool] = True
    # the names of the model's inputs when it takes more than one tensor (ONNX export)
    input_names: ClassVar[tuple[str, ...]] = ()

    def details(self, value: Details | dict[str, Any] | None) -> Details:
        """`value` as this task's typed details; a one-line DataError names a wrong field."""
        if isinstance(value, self.Details):
            return value
        if isinstance(value, Details):
            value = value.model_dump()
        try:
            return self.Details.model_validate(value or {})
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"]) or "details"
            raise DataError(
                f"data details of a {self.name} task: {field}: {problem['msg']} "
                f"(known: {', '.join(self.Details.model_fields) or 'none'})"
            ) from None

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        """The task's report on `split` of `bundle` (what `dlab evaluate` prints and saves)."""
        raise NotImplementedError

    def adapt(self, bundle: DataBundle, config: Any) -> DataBundle:
        """`bundle` (built by its data set for that data's own task) as this task learns it;
        most tasks take their data as it comes."""
        return bundle

    def predict(self, run: Run, batch: torch.Tensor, top_k: int = 5) -> list[dict[str, Any]]:
        """The answers of `run`'s model to a batch of prepared inputs (what `predict` shows)."""
        import torch

        with torch.no_grad():
            outputs = run.model(batch)
        return self.answer(outputs, run.meta, top_k)

    def output_size(self, meta: DataMeta) -> int:
        """How many numbers a model's head emits per prediction for data `meta`."""
        raise NotImplementedError

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        """Random (inputs, targets) shaped like this task's data (registry-wide tests, FLOPs)."""
        raise NotImplementedError

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict[str, Any]]:
        """What `predict` (the CLI, the API, `dlab serve`) answers for a batch of model outputs:
        one JSON-able dict per input."""
        raise NotImplementedError(f"{self.name} answers no predict")

    def report_sections(self) -> list[Section]:
        """The task's own sections of a run's report (called only when a report is built)."""
        return []

    def draw(self, run: Run, batch: torch.Tensor, path: Path) -> Path:
        """A PNG at `path` of the model's answers for a batch of inputs (`predict --out`)."""
        what = self.name.replace("_", " ")
        raise InputError(f"--out: a {what} model has no picture of its answers to draw")

    def headline_of(self, report: dict[str, Any]) -> dict[str, Any]:
        """The headline metrics found in `report`, in the task's order."""
        return {k: report[k] for k in self.headline if isinstance(report.get(k), int | float)}

    def require(self, verb: str) -> None:
        """Raise a one-line InputError if this task does not answer `verb`."""
        if verb in self.verbs:
            return
        what = self.name.replace("_", " ")
        hint = f"; this model answers `{COMMANDS[self.verbs[0]]}`" if self.verbs else ""
        raise InputError(f"{verb}: this is a {what} model, which {verb} does not serve{hint}")


def register(task: type[Task]) -> type[Task]:
    """Class decorator: add `task` to the registry under `task.name`."""
    TASKS.register(task.name, summary=(task.__doc__ or "").strip().splitlines()[0])(task)
    return task


def task_of(meta: DataMeta | str) -> Task:
    """The task of a data set's metadata (or a task name)."""
    name = meta if isinstance(meta, str) else meta.task
    return TASKS.get(name).builder()
