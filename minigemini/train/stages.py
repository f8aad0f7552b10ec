"""What each training stage trains (paper §3.3 / §4.1): the encoders stay frozen, mining + projector always train."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "MULTIMODAL_MODULES",
    "configure_trainable",
    "is_multimodal_parameter",
    "parameter_counts",
    "upcast_trainable",
]

#: Submodules of MiniGeminiModel that connect vision to the LLM (own learning rate; LoRA's modules_to_save).
MULTIMODAL_MODULES = ("mining", "mm_projector")


def is_multimodal_parameter(name: str) -> bool:
    """True for parameters of the mining layer or the projector (also inside PEFT wrappers)."""
    return any(part in MULTIMODAL_MODULES for part in name.split("."))


def configure_trainable(
    model: nn.Module,
    stage: int,
    tune_vision: bool = False,
    tune_vision_aux: bool = False,
    train_llm: bool | None = None,
) -> None:
    """Set ``requires_grad`` for a stage.

    stage 1: mining + projector only.  stage 2: also the LLM (its embeddings and head included) unless
    ``train_llm=False`` (LoRA trains it through adapters instead).  ``tune_vision`` / ``tune_vision_aux`` also train
    the LR / HR encoder; frozen encoders get drop-path turned off.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    train_llm = (stage == 2) if train_llm is None else train_llm
    model.requires_grad_(False)
    model.freeze_vision_towers(low_res=not tune_vision, high_res=not tune_vision_aux)
    inner = model.model
    if inner.mining is not None:  # absent in the LLaVA-style baseline
        inner.mining.requires_grad_(True)
    inner.mm_projector.requires_grad_(True)
    if tune_vision:
        inner.vision_tower.requires_grad_(True)
    if tune_vision_aux and inner.vision_tower_aux is not None:
        inner.vision_tower_aux.requires_grad_(True)
    if train_llm:
        inner.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)


def upcast_trainable(model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
    """Keep trainable parameters in full precision when the frozen rest is loaded in half precision."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != dtype and parameter.is_floating_point():
            parameter.data = parameter.data.to(dtype)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (shared tensors counted once)."""
    seen, trainable, total = set(), 0, 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        count = getattr(parameter, "ds_numel", None) or parameter.numel()  # ZeRO-3 partitions report ds_numel
        total += count
        trainable += count if parameter.requires_grad else 0
    return {"trainable": trainable, "total": total}
