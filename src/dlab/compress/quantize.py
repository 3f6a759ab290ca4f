"""int8 quantization with the API that works on the installed torch.

Checked on torch 2.13: `torch.ao.quantization` still ships (deprecated in favour of torchao) and
its x86/fbgemm kernels run int8 models fast in eager mode; torchao 0.18's `quantize_` and pt2e
paths work too but were ~100x slower in eager mode on this CPU and need `torch.compile` (17 s)
to catch up. So dlab uses torch.ao here, behind this one module:

- dynamic int8 (weights int8, activations quantized on the fly) for Linear, LSTM and GRU layers,
  and 8-bit embedding tables (weight-only, a scale per row) — in text models they are most of the size;
- static int8 (calibrated activation ranges, FX graph mode) for convolutional networks.

A quantized run stores float weights (dynamic) or the calibrated, observed model's state (static),
both plain tensors in safetensors, and re-quantizes deterministically when loaded.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dlab.errors import DlabError

MODES = ("int8", "int8-dynamic", "int8-static")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():  # torch.ao announces its retirement on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def resolve_mode(model: nn.Module, mode: str) -> str:
    """int8 -> int8-static for convolutional networks, int8-dynamic for the rest."""
    if mode not in MODES:
        raise DlabError(f"--quantize: '{mode}' should be one of {', '.join(MODES)}")
    if mode != "int8":
        return mode
    return (
        "int8-static"
        if any(isinstance(m, nn.Conv1d | nn.Conv2d) for m in model.modules())
        else "int8-dynamic"
    )


def dynamic(model: nn.Module) -> nn.Module:
    """Linear, LSTM and GRU layers with int8 weights; embedding tables with 8-bit rows."""
    with _quiet():
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            float_qparams_weight_only_qconfig,
            quantize_dynamic,
        )

        spec = {kind: default_dynamic_qconfig for kind in (nn.Linear, nn.LSTM, nn.GRU)}
        spec[nn.Embedding] = float_qparams_weight_only_qconfig  # 8-bit rows, per-row scale
        quantized = quantize_dynamic(copy.deepcopy(model).eval(), spec, dtype=torch.qint8)
    for module in quantized.modules():
        if type(module).__name__ == "Embedding" and "quantized" in type(module).__module__:
            module.register_forward_pre_hook(_contiguous)  # its kernel refuses strided indices
    return quantized


def _contiguous(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def prepare_static(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """An observed copy of `model` (FX graph mode) that records activation ranges when run."""
    with _quiet():
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import prepare_fx

        torch.backends.quantized.engine = (
            "x86" if "x86" in torch.backends.quantized.supported_engines else "qnnpack"
        )
        try:
            return prepare_fx(
                copy.deepcopy(model).eval(),
                get_default_qconfig_mapping(torch.backends.quantized.engine),
                example_inputs=(example,),
            )
        except Exception as exc:  # control flow FX cannot trace
            raise DlabError(
                f"--quantize int8-static: this model cannot be traced for static quantization ({type(exc).__name__}); use int8-dynamic"
            ) from None


def convert_static(prepared: nn.Module) -> nn.Module:
    with _quiet():
        from torch.ao.quantization.quantize_fx import convert_fx

        return convert_fx(copy.deepcopy(prepared))


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: list[torch.Tensor]) -> None:
    """Run calibration batches through the observers."""
    for x in batches:
        prepared(x)


def save(mode: str, model: nn.Module, prepared: nn.Module | None, path: Path) -> None:
    """What a quantized run stores: the float weights, or the observed model with its ranges."""
    source = prepared if mode == "int8-static" else model
    save_file(
        {
            k: v.detach().clone().contiguous() for k, v in source.state_dict().items()
        },  # observers may share tensors
        str(path),
        metadata={"format": "dlab-quantized-1", "mode": mode},
    )


def load(model: nn.Module, mode: str, path: Path, example: torch.Tensor | None) -> nn.Module:
    """Rebuild the quantized model from what `save` stored (identical to the one measured)."""
    state = load_file(str(path))
    if mode == "int8-dynamic":
        model.load_state_dict(state)
        return dynamic(model)
    if example is None:
        raise DlabError("a static int8 model needs an example input shape to be rebuilt")
    prepared = prepare_static(model, example)
    prepared.load_state_dict(state)
    return convert_static(prepared)


def quantize(
    model: nn.Module, mode: str, calibration: list[torch.Tensor]
) -> tuple[str, nn.Module, nn.Module | None]:
    """(resolved mode, quantized model, observed model for static) of a float model."""
    mode = resolve_mode(model, mode)
    if mode == "int8-dynamic":
        return mode, dynamic(model), None
    prepared = prepare_static(model, calibration[0])
    calibrate(prepared, calibration)
    return mode, convert_static(prepared), prepared


def describe(model: Any) -> str:
    """Which layers ended up quantized."""
    kinds = sorted({type(m).__name__ for m in model.modules() if "quantized" in type(m).__module__})
    return ", ".join(kinds) or "none"
