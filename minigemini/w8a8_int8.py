"""Save a Mini-Gemini whose LLM is int8 for vLLM: the compressed-tensors W8A8 int8 format (``mgm quantize --scheme
w8a8-int8``).

The LLM's linear layers are stored as int8 weights with one fp32 scale per output channel (symmetric: ``w ~= q *
scale``, ``q`` in [-127, 127]); vLLM quantises their inputs itself, per token, while it runs (dynamic activations: no
calibration data). Everything else (the vision towers, mining, projector, embeddings, norms, LM head) is saved as it
is. vLLM reads the config's ``quantization_config`` and runs these layers with its int8 kernels: on CPUs,
``CPUInt8ScaledMMLinearKernel`` (vLLM's AMX kernel in bf16 where the CPU has AMX, oneDNN otherwise); on NVIDIA GPUs,
its CUTLASS int8 kernels. The format is the one llm-compressor writes (``int-quantized``); transformers reads it only
with the ``compressed-tensors`` package installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from minigemini.errors import UserError

__all__ = ["SCHEME", "SCHEME_HELP", "int8_per_channel", "quantization_config", "save_w8a8_int8"]

SCHEME = "w8a8-int8"
SCHEME_HELP = "int8 weights and activations, saved for vLLM (compressed-tensors W8A8; vLLM's CPU or GPU kernels)"
#: the modules that stay in full precision, as compressed-tensors `ignore` patterns (checkpoint names)
KEPT_MODULES = ["lm_head", "re:.*vision_tower.*", "re:.*mining.*", "re:.*mm_projector.*"]


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output channel (row): ``(q int8 [out, in], scale fp32 [out, 1])``."""
    weight = weight.float()
    scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127
    return torch.round(weight / scale).clamp(-127, 127).to(torch.int8), scale


def quantization_config() -> dict:
    """The config's `quantization_config`: every Linear not in `ignore` has int8 per-channel weights and int8
    per-token inputs quantised at run time."""
    int8 = {"num_bits": 8, "type": "int", "symmetric": True}
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {**int8, "strategy": "channel", "dynamic": False},
                "input_activations": {**int8, "strategy": "token", "dynamic": True},
                "output_activations": None,
            }
        },
        "ignore": KEPT_MODULES,
        "kv_cache_scheme": None,
    }


def llm_linear_weights(model: nn.Module) -> set[str]:
    """The checkpoint names of the LLM's linear weights (`model.language_model.*.weight`); refuses an LLM with
    weights outside linear layers that vLLM would expect quantised too (MoE experts)."""
    language_model = model.model.language_model
    prefix = "model.language_model."
    names = {
        f"{prefix}{name}.weight" for name, module in language_model.named_modules() if isinstance(module, nn.Linear)
    }
    experts = [name for name, weight in language_model.named_parameters() if weight.dim() > 2]
    if experts:
        raise UserError(
            f"{SCHEME} quantises dense LLMs; this one has expert weights outside linear layers ({experts[0]}, ...): "
            "quantise it with llm-compressor, or serve it in full precision"
        )
    return names


def save_w8a8_int8(model: nn.Module, processor, output: str | os.PathLike, **save_options) -> Path:
    """Save ``model`` (full precision) and ``processor`` to ``output`` with the LLM's linear layers in int8 (each
    shard quantised in place; ``save_options``: ``save_pretrained``'s, e.g. ``max_shard_size``)."""
    output = Path(output)
    targets = llm_linear_weights(model)
    model.save_pretrained(output, **save_options)
    processor.save_pretrained(output)
    index_file = output / "model.safetensors.index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else None
    shards = sorted(set(index["weight_map"].values())) if index else ["model.safetensors"]
    found = set()
    for shard in shards:
        found |= _quantize_shard(output / shard, targets, index["weight_map"] if index else None)
    if found != targets:
        missing = sorted(targets - found)[:3]
        raise RuntimeError(f"the saved checkpoint lacks LLM linear weights the model has: {missing}")
    if index:
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config_file = output / "config.json"
    config = json.loads(config_file.read_text())
    config["quantization_config"] = quantization_config()
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return output


def _quantize_shard(path: Path, targets: set[str], weight_map: dict | None) -> set[str]:
    """Rewrite one safetensors file with its `targets` as int8 + `weight_scale`; returns the names it quantised."""
    tensors = load_file(path)
    quantized = {}
    for name in sorted(targets & tensors.keys()):
        scale_name = name.removesuffix("weight") + "weight_scale"
        quantized[name], quantized[scale_name] = int8_per_channel(tensors[name])
        if weight_map is not None:
            weight_map[scale_name] = path.name
    if quantized:
        save_file({**tensors, **quantized}, path, metadata={"format": "pt"})
    return {name for name in quantized if name in targets}
