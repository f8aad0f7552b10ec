"""Quantised loading: the scheme names every door takes (``--quantize``, ``load_pretrained(quantization=...)``, ...).

Only the LLM is quantised: the model names the modules that stay in full precision (``modeling.VISION_MODULES``,
declared as transformers' ``_keep_in_fp32_modules``), so these configs carry no skip list, and a plain
``BitsAndBytesConfig`` / ``TorchAoConfig`` built by a user quantises the same layers.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from minigemini.errors import UserError

__all__ = [
    "SCHEMES",
    "check_not_quantized",
    "checkpoint_quantization",
    "quantization_config",
    "scheme_from_flags",
]


@dataclass(frozen=True)
class Scheme:
    backend: str  #: the package that runs it (its import name)
    devices: tuple[str, ...]  #: device types it runs on
    help: str


#: name -> the backend and devices that run it; ``--quantize`` takes these names.
SCHEMES: dict[str, Scheme] = {
    "nf4": Scheme("bitsandbytes", ("cuda", "cpu", "xpu"), "4-bit NormalFloat, double-quantised (bitsandbytes)"),
    "int8": Scheme("bitsandbytes", ("cuda", "cpu", "xpu"), "8-bit LLM.int8() (bitsandbytes)"),
    "torchao-int8": Scheme("torchao", ("cuda", "cpu"), "8-bit weight-only (torchao)"),
    "torchao-int4": Scheme("torchao", ("cuda",), "4-bit weight-only, group size 128 (torchao)"),
    "fp8": Scheme("torchao", ("cuda",), "8-bit float weights and activations (torchao; Ada/Hopper GPUs)"),
}


def scheme_from_flags(quantization: Any = None, load_in_4bit: bool = False, load_in_8bit: bool = False) -> Any:
    """The one quantization value from the release's ``load_4bit``/``load_8bit`` aliases and ``quantization``."""
    flags = (quantization, "nf4" if load_in_4bit else None, "int8" if load_in_8bit else None)
    chosen = [value for value in flags if value is not None]
    if len(chosen) > 1:
        raise UserError("choose one quantization: --quantize, --load-4bit and --load-8bit exclude each other")
    return chosen[0] if chosen else None


def quantization_config(quantization: Any, device: torch.device, compute_dtype: torch.dtype):
    """A transformers quantization config for ``quantization``: a scheme name (``SCHEMES``) checked against the device
    and the installed backend, or a config object (``BitsAndBytesConfig``, ``TorchAoConfig``, ...) as it is."""
    if not isinstance(quantization, str):
        return quantization
    scheme = SCHEMES.get(quantization)
    if scheme is None:
        raise UserError(f"unknown quantization {quantization!r}; choose one of {', '.join(SCHEMES)}")
    if device.type not in scheme.devices:
        where = " or ".join(scheme.devices)
        raise UserError(f"quantization {quantization} runs on {where}, not {device.type}; choose nf4 or int8 there")
    if importlib.util.find_spec(scheme.backend) is None:
        raise UserError(f'quantization {quantization} needs {scheme.backend}: pip install "minigemini[quant]"')
    return _CONFIGS[quantization](compute_dtype)


def _nf4(compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
    )


def _int8(compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=True)


def _torchao(name: str, **options: Any):
    def build(compute_dtype: torch.dtype):
        import torchao.quantization
        from transformers import TorchAoConfig

        return TorchAoConfig(getattr(torchao.quantization, name)(**options))

    return build


_CONFIGS = {
    "nf4": _nf4,
    "int8": _int8,
    "torchao-int8": _torchao("Int8WeightOnlyConfig"),
    "torchao-int4": _torchao("Int4WeightOnlyConfig", group_size=128),
    "fp8": _torchao("Float8DynamicActivationFloat8WeightConfig"),
}


def checkpoint_quantization(path: str | os.PathLike) -> str | None:
    """The quantization method a saved checkpoint's config names (``bitsandbytes``, ``torchao``, ...), else None."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f).get("quantization_config")
    except (OSError, ValueError):
        return None
    if not config:
        return None
    method = config.get("quant_method", "quantized")
    if method == "bitsandbytes":
        return "nf4" if config.get("load_in_4bit") else "int8"
    return method


def check_not_quantized(path: str | os.PathLike, quantization: Any) -> str | None:
    """Refuse to quantise a checkpoint saved quantised (it loads quantised with no option); returns the checkpoint's
    own quantization (``checkpoint_quantization``), None when it was saved in full precision."""
    found = checkpoint_quantization(path)
    if found == "compressed-tensors" and importlib.util.find_spec("compressed_tensors") is None:
        raise UserError(
            f"{os.fspath(path)} is quantized in the compressed-tensors format (mgm quantize --scheme w8a8-int8), "
            'which transformers loads with compressed-tensors: pip install "minigemini[quant]"'
        )
    if found is not None and quantization is not None:
        raise UserError(
            f"{os.fspath(path)} is already quantized ({found}) and loads so as it is: drop --quantize, or quantize "
            "its full-precision checkpoint"
        )
    return found
