"""The one dtype vocabulary of every command, and which precision "auto" means on this machine.

bf16 mixed precision is the paper's and the fast choice on GPUs and on CPUs with bf16 matrix kernels (AVX-512 or AMX
on x86, the bf16 extension on Arm).  Elsewhere PyTorch falls back to a scalar bf16 kernel, many times slower than
fp32 (`benchmarks/bench_precision.py` measures both on the machine at hand).
"""

from __future__ import annotations

import warnings

import torch

__all__ = [
    "DTYPE_NAMES",
    "PRECISIONS",
    "TOWER_PRECISIONS",
    "check_tower_precision",
    "cpu_has_fast_bf16",
    "cpu_inference_dtype",
    "dtype_name",
    "parse_dtype",
    "resolve_precision",
    "tower_autocast",
    "tower_device",
]

# The one dtype vocabulary of every command and function: the short names are documented, the long ones accepted.
DTYPE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def dtype_name(name: str | torch.dtype) -> str:
    """The short name (``bf16``, ``fp16``, ``fp32``, or ``auto``) of any accepted spelling; ValueError otherwise."""
    if isinstance(name, torch.dtype):
        for short, dtype in DTYPE_NAMES.items():
            if dtype == name:
                return short
        raise ValueError(f"unsupported dtype {name}; use one of bf16, fp16, fp32")
    key = str(name).lower()
    key = _DTYPE_ALIASES.get(key, key)
    if key != "auto" and key not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; use one of auto, bf16, fp16, fp32 (or bfloat16, float16, float32)")
    return key


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"fp16"``/``"fp32"`` (and long names) -> torch dtype; ``None``/``"auto"`` -> None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    name = dtype_name(name)
    return None if name == "auto" else DTYPE_NAMES[name]


PRECISIONS = ("auto", "bf16", "fp16", "fp32")
TOWER_PRECISIONS = ("auto", "bf16", "fp32")  # the synthetic recipe's tower steps: bf16 autocast or none, no fp16


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix kernels (oneDNN's own check; the CPU capability PyTorch reports where that
    check is missing)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def cpu_inference_dtype() -> torch.dtype:
    """The dtype the default model answers in on a CPU: bf16 where it has bf16 kernels (faster, the same answers),
    else fp32 (bf16 without those kernels is slower)."""
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def resolve_precision(precision: str, on_cpu: bool | None = None) -> str:
    """``precision`` unless it is "auto": then bf16, but fp16 on a GPU without bf16 and fp32 on a CPU without fast
    bf16.  ``on_cpu``: where training runs (default: on the CPU unless CUDA or MPS is available)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if on_cpu is None:
        on_cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    fast = not on_cpu or cpu_has_fast_bf16()
    if precision != "auto":
        if precision == "bf16" and not fast:
            warnings.warn("bf16 on this CPU runs without bf16 kernels, many times slower than fp32: use auto or fp32")
        return precision
    if on_cpu:
        return "bf16" if fast else "fp32"
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def check_tower_precision(precision: str) -> None:
    """Refuse a precision the tower steps cannot run (fp16 would need loss scaling), naming the ones they can."""
    if precision not in TOWER_PRECISIONS:
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")


def tower_device() -> torch.device:
    """Where the synthetic recipe's tower steps (encoders, read, align) train: a CUDA GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tower_autocast(precision: str, device: torch.device) -> torch.autocast:
    """A tower step's autocast on ``device``: bf16 when ``precision`` resolves to it there, otherwise off (fp32; "auto"
    on a GPU without bf16 too)."""
    enabled = resolve_precision(precision, on_cpu=device.type == "cpu") == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
