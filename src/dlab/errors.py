"""Errors a user can cause. The CLI prints their one-line message and exits with `exit_code`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DlabError(Exception):
    """Base of every error a user can cause (bad recipe, missing data, bad input)."""

    exit_code = 2


class RecipeError(DlabError):
    """A recipe file, field or override is invalid."""


class DataError(DlabError):
    """A data set is missing, corrupt, or not what it claims to be."""


class RunError(DlabError):
    """A run directory is missing, incomplete or not a run."""


class InputError(DlabError):
    """An input given to predict/evaluate/serve does not fit the model."""


class TrainingDiverged(DlabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class TrainingInterrupted(DlabError):
    """Training was stopped by a signal after saving a checkpoint."""

    exit_code = 130


class DlabWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints one line)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' hint for the closest valid name, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class DiskFull(TrainingInterrupted):
    """The disk filled while writing a checkpoint; the last complete one is intact."""

    exit_code = 2
