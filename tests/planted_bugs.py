"""The planted bugs of issue 25, re-run: each one-line bug (or switched-off feature) is written
into a copy of the tree and the tests that guard against it must fail.

    python tests/planted_bugs.py          # every row; exits 1 if one passes unnoticed

Each row: (file, the code as it is, the bug, the tests to run). The copy lives in a temporary
folder; the checkout is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS, CHECKPOINT = "src/dlab/training/metrics.py", "src/dlab/training/checkpoint.py"
TEXT, TRAINER = "src/dlab/recipe/text.py", "src/dlab/training/trainer.py"
STRATEGIES = "src/dlab/training/strategies.py"
T_METRICS, T_CHECKPOINT = "tests/training/test_metrics.py", "tests/training/test_checkpoint.py"
T_RECIPE, T_SWITCHES = "tests/test_recipe.py", "tests/training/test_switches.py"

ROWS = [
    ("accuracy computed macro instead of micro", METRICS,
     '"accuracy": (\n            "classification.MulticlassAccuracy",\n'
     '            lambda m: {"num_classes": m.num_classes, "average": "micro"},',
     '"accuracy": (\n            "classification.MulticlassAccuracy",\n'
     '            lambda m: {"num_classes": m.num_classes, "average": "macro"},', T_METRICS),
    ("token accuracy counts padding", METRICS,
     "scored = targets != IGNORE", "scored = targets == targets", T_METRICS),
    ("epoch metric = mean of per-batch means", METRICS,
     "total += loss_fn(outputs, targets).double() * len(targets)\n        count += len(targets)",
     "total += loss_fn(outputs, targets).double()\n        count += 1", T_METRICS),
    ("rmse returns the MSE", METRICS,
     '"rmse": ("MeanSquaredError", lambda m: {"squared": False}),',
     '"rmse": ("MeanSquaredError", lambda m: {"squared": True}),', T_METRICS),
    ("a stale latest pointer falls back to the oldest checkpoint", CHECKPOINT,
     "return complete[-1][2] if complete else None",
     "return complete[0][2] if complete else None", T_CHECKPOINT),
    ("unexpected keys in a weights file ignored", CHECKPOINT,
     "    if missing or unexpected:\n        raise RunError(",
     "    if missing:\n        raise RunError(", T_CHECKPOINT),
    ("latest pointer written before the folder is renamed", CHECKPOINT,
     '        os.rename(tmp, final)\n        _fsync_dir(self.folder)\n'
     '        atomic_write_text(self.folder / "latest", final.name + "\\n")',
     '        atomic_write_text(self.folder / "latest", final.name + "\\n")\n'
     "        os.rename(tmp, final)\n        _fsync_dir(self.folder)", T_CHECKPOINT),
    ("checkpoint numbering = count + 1", CHECKPOINT,
     "number = existing[-1][0] + 1 if existing else 1", "number = len(existing) + 1",
     T_CHECKPOINT),
    ("naming the optimizer already chosen wipes its settings", TEXT,
     'path[:-1] in _COMPONENT_PATHS and last == "name" and node.get("name") != value',
     'path[:-1] in _COMPONENT_PATHS and last == "name"', T_RECIPE),
    ("a shorthand component not expanded before its field is set", TEXT,
     "if isinstance(child, str) and tuple(keys[: depth + 1]) in _COMPONENT_PATHS:",
     "if False:", T_RECIPE),
    ("override values containing '=' rejected", TEXT,
     '=(.*)$", re.DOTALL)', '=([^=]*)$", re.DOTALL)', T_RECIPE),
    ("a YAML error in an override value becomes None", TEXT,
     "value = match.group(2)  # e.g.", "value = None  # e.g.", T_RECIPE),
    ("gradient accumulation forced to one part", STRATEGIES,
     "        if self.parts == 1:\n            return [(inputs, targets)]",
     "        if True:\n            return [(inputs, targets)]", T_SWITCHES),
    ("bf16 autocast off", STRATEGIES,
     "(lambda: torch.autocast(device.type, dtype=torch.bfloat16))",
     "(lambda: contextlib.nullcontext())", T_SWITCHES),
    ("grad_clip a no-op", TRAINER,
     "grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)",
     "grad_norm = strategy.grad_norm(self.model)", T_SWITCHES),
    ("compile a no-op", TRAINER,
     "self.model.forward = torch.compile(self.model.forward)", "pass", T_SWITCHES),
]  # fmt: skip


def caught(file: str, code: str, bug: str, tests: str) -> tuple[bool, str]:
    """Whether `tests` fail with `bug` written over `code` in a copy of the tree."""
    with tempfile.TemporaryDirectory(prefix="planted-") as scratch:
        copy = Path(scratch) / "tree"
        skip = shutil.ignore_patterns(".venv", "mutants", ".git", "__pycache__", "runs")
        shutil.copytree(ROOT, copy, ignore=skip)
        target = copy / file
        source = target.read_text(encoding="utf-8")
        if code not in source:
            raise SystemExit(f"{file}: the code of this row is no longer there: {code!r}")
        target.write_text(source.replace(code, bug, 1), encoding="utf-8")  # the first place
        env = {**os.environ, "PYTHONPATH": f"{copy}/src:{copy}/tests:{copy}"}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", tests],
            cwd=copy, env=env, capture_output=True, text=True,
        )  # fmt: skip
        summary = (done.stdout.strip().splitlines() or [""])[-1]
        return done.returncode != 0, summary


def main() -> int:
    missed = 0
    for name, file, code, bug, tests in ROWS:
        noticed, summary = caught(file, code, bug, tests)
        missed += not noticed
        print(f"{'caught' if noticed else 'MISSED':6}  {name:60}  {summary}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
