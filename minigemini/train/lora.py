"""LoRA / QLoRA with PEFT, round-tripping: train -> save adapter -> load on the base -> merge into a plain checkpoint.

LoRA goes on every linear layer of the LLM (not its head); the mining layer and the projector are trained in full
and saved inside the adapter (PEFT ``modules_to_save``), as are encoders tuned with --tune-vision(-aux).  The adapter
folder names its base model (``adapter_config.json``) and carries the processor, so it loads with
``load_lora(adapter_dir)`` or plain ``PeftModel.from_pretrained(base, adapter_dir)``; ``merge_lora`` writes a normal
checkpoint that ``MiniGeminiForConditionalGeneration.from_pretrained`` loads.

QLoRA (``bits=4``, or 8) loads the LLM quantised with bitsandbytes (``minigemini.quantization``'s nf4 / int8), on a
GPU or a CPU.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from minigemini import quantization
from minigemini.errors import require
from minigemini.train.stages import MULTIMODAL_MODULES

__all__ = [
    "adapter_base",
    "apply_lora",
    "continue_lora",
    "load_lora",
    "lora_target_modules",
    "merge_lora",
    "quantization_config",
]

ADAPTER_CONFIG = "adapter_config.json"


def _require_peft():
    require("peft")
    import peft

    return peft


def lora_target_modules(model: nn.Module) -> list[str]:
    """Full names of the LLM's linear layers (the LM head and the vision side excluded)."""
    prefix = "model.language_model."
    # bitsandbytes' Linear4bit / Linear8bitLt are nn.Linear subclasses, so QLoRA finds the same layers.
    names = [
        name for name, module in model.named_modules() if name.startswith(prefix) and isinstance(module, nn.Linear)
    ]
    if not names:
        raise ValueError("found no linear layer in the language model to put LoRA on")
    return names


def apply_lora(
    model: nn.Module,
    r: int = 128,
    alpha: int = 256,
    dropout: float = 0.05,
    extra_modules_to_save: tuple[str, ...] = (),
    adapter_fp32: bool = True,
):
    """Wrap ``model`` in a PEFT model: LoRA on the LLM's linears, mining + projector (+ extras) trained in full.

    ``adapter_fp32=False`` keeps the adapter in the model's dtype (DeepSpeed wants one dtype; its masters are fp32)."""
    peft = _require_peft()
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
        target_modules=lora_target_modules(model),
        modules_to_save=list(MULTIMODAL_MODULES) + list(extra_modules_to_save),
    )
    return peft.get_peft_model(model, config, autocast_adapter_dtype=adapter_fp32)


def quantization_config(bits: int, device: torch.device, compute_dtype: torch.dtype):
    """QLoRA's BitsAndBytesConfig: ``--bits 4`` is nf4, ``--bits 8`` LLM.int8(), the LLM only (the model keeps its
    vision side in full precision); a missing bitsandbytes or a device it cannot run on is one line."""
    return quantization.quantization_config({4: "nf4", 8: "int8"}[bits], device, compute_dtype)


def _base_path(adapter_dir: str, base: str | None) -> str:
    if base is not None:
        return base
    with open(os.path.join(adapter_dir, ADAPTER_CONFIG), encoding="utf-8") as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/{ADAPTER_CONFIG} names no base model; pass base=")
    return base


def adapter_base(adapter_dir: str) -> str:
    """The base checkpoint an adapter folder names (its ``adapter_config.json``)."""
    return _base_path(adapter_dir, None)


def continue_lora(model: nn.Module, adapter_dir: str, adapter_fp32: bool = True):
    """``model`` (the adapter's base) with the adapter loaded trainable: its LoRA (at its own rank and alpha) and its
    ``modules_to_save`` (mining, projector, tuned towers) train on from where they stopped and save as one adapter
    again -- so a further stage on new data still exports as the committed form (one adapter beside the LLM)."""
    peft = _require_peft()
    return peft.PeftModel.from_pretrained(model, adapter_dir, is_trainable=True, autocast_adapter_dtype=adapter_fp32)


def load_lora(adapter_dir: str, base: str | None = None, **from_pretrained_kwargs: Any):
    """The base MiniGemini (from the adapter's config, or ``base``) with the adapter loaded (a PeftModel)."""
    peft = _require_peft()
    from minigemini.modeling import MiniGeminiForConditionalGeneration

    if not os.path.isfile(os.path.join(adapter_dir, ADAPTER_CONFIG)):
        raise FileNotFoundError(f"{adapter_dir} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    model = MiniGeminiForConditionalGeneration.from_pretrained(_base_path(adapter_dir, base), **from_pretrained_kwargs)
    return peft.PeftModel.from_pretrained(model, adapter_dir)


def merge_lora(adapter_dir: str, output_dir: str, base: str | None = None, dtype: torch.dtype | None = None) -> str:
    """Merge an adapter into its base and save a plain checkpoint (+ the processor) to ``output_dir``."""
    from minigemini.processing import MiniGeminiProcessor

    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = load_lora(adapter_dir, base, **kwargs)
    merged = model.merge_and_unload()
    merged.save_pretrained(output_dir)
    source = (
        adapter_dir
        if os.path.isfile(os.path.join(adapter_dir, "processor_config.json"))
        else _base_path(adapter_dir, base)
    )
    MiniGeminiProcessor.from_pretrained(source).save_pretrained(output_dir)
    return output_dir
