"""Save a Mini-Gemini whose LLM is int8: the compressed-tensors W8A8 int8 format (``mgm quantize --scheme w8a8-int8``).

The LLM's linear layers are stored as int8 weights with one fp32 scale per output channel (symmetric); their inputs
are quantised per token while the model runs (dynamic activations: no calibration data). Everything else (the vision
towers, mining, projector, embeddings, norms, LM head) is saved as it is. The format, its config and its arithmetic
are compressed-tensors' own (its ``W8A8`` preset, ``int-quantized``, as llm-compressor writes it), so two readers
take the checkpoint as it is: vLLM, with its int8 kernels (on CPUs ``CPUInt8ScaledMMLinearKernel``: AMX in bf16,
oneDNN otherwise; on NVIDIA GPUs CUTLASS), and transformers with the ``compressed-tensors`` package installed (it
loads the int8 weights and dequantises them on the first forward, quantising the activations per token).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from minigemini.errors import UserError, require
from minigemini.saving import set_generation_defaults, write_directory_atomically

__all__ = ["SCHEME", "SCHEME_HELP", "int8_per_channel", "quantization_config", "save_w8a8_int8", "w8a8_scheme"]

SCHEME = "w8a8-int8"
SCHEME_HELP = "int8 weights and activations (compressed-tensors W8A8: vLLM's CPU or GPU kernels; transformers)"
#: the modules that stay in full precision, as compressed-tensors `ignore` patterns (checkpoint names)
KEPT_MODULES = ["lm_head", "re:.*vision_tower.*", "re:.*mining.*", "re:.*mm_projector.*"]


def w8a8_scheme():
    """compressed-tensors' W8A8 preset for every Linear: int8 weights per output channel, int8 inputs per token."""
    from compressed_tensors.quantization import preset_name_to_scheme

    return preset_name_to_scheme("W8A8", targets=["Linear"])


def quantization_config():
    """The checkpoint's compressed-tensors ``QuantizationConfig``: W8A8 on every Linear outside ``KEPT_MODULES``,
    stored compressed (int8)."""
    from compressed_tensors.config import CompressionFormat
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus

    return QuantizationConfig(
        config_groups={"group_0": w8a8_scheme()},
        format=CompressionFormat.int_quantized.value,
        quantization_status=QuantizationStatus.COMPRESSED,
        ignore=list(KEPT_MODULES),
    )


def int8_per_channel(weight: torch.Tensor, scheme=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] as compressed-tensors stores it: ``(q int8 [out, in], scale fp32 [out, 1])``.

    The scale comes from each row's min and max, which is what llm-compressor's MinMax observer measures for W8A8
    weights (compressed-tensors has no observer of its own: that lives in llm-compressor, which we cannot depend on);
    the scale and the rounding are compressed-tensors' (``calculate_qparams``, the int-quantized compressor)."""
    from compressed_tensors.compressors import IntQuantizationCompressor
    from compressed_tensors.quantization.utils import calculate_qparams

    scheme = scheme or w8a8_scheme()
    weight = weight.float()
    scale, zero_point = calculate_qparams(weight.amin(1, keepdim=True), weight.amax(1, keepdim=True), scheme.weights)
    state = {"weight": weight, "weight_scale": scale, "weight_zero_point": zero_point}
    compressed = IntQuantizationCompressor.compress(state, scheme)  # symmetric: the zero point is dropped
    return compressed["weight"], compressed["weight_scale"]


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
    """Save ``model`` (full precision) and ``processor`` to ``output`` with the LLM's linear layers in int8
    (``save_options``: ``save_pretrained``'s, e.g. ``max_shard_size``). Written into a staging directory renamed into
    place when complete: an error leaves no ``output``; an existing non-empty ``output`` is refused."""
    require("compressed_tensors", extra="quant")
    targets = llm_linear_weights(model)
    set_generation_defaults(model, processor)
    return write_directory_atomically(output, lambda staging: _write(model, processor, staging, targets, save_options))


def _write(model: nn.Module, processor, output: Path, targets: set[str], save_options: dict) -> None:
    """save_pretrained into ``output``, then each shard's ``targets`` quantised in place and the config's
    ``quantization_config`` written by compressed-tensors (``ModelCompressor.update_config``)."""
    from compressed_tensors.compressors import ModelCompressor

    model.save_pretrained(output, **save_options)
    processor.save_pretrained(output)
    index_file = output / "model.safetensors.index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else None
    weight_map = index["weight_map"] if index else None
    found, scheme = set(), w8a8_scheme()
    for shard in sorted(set(weight_map.values())) if index else ["model.safetensors"]:
        found |= _quantize_shard(output / shard, targets, weight_map, scheme)
    if found != targets:
        missing = sorted(targets - found)[:3]
        raise RuntimeError(f"the saved checkpoint lacks LLM linear weights the model has: {missing}")
    if index:
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    ModelCompressor(quantization_config=quantization_config()).update_config(os.fspath(output))


def _quantize_shard(path: Path, targets: set[str], weight_map: dict | None, scheme) -> set[str]:
    """Rewrite one safetensors file with its `targets` as int8 + `weight_scale`; returns the names it quantised."""
    tensors = load_file(path)
    quantized = {}
    for name in sorted(targets & tensors.keys()):
        scale_name = name.removesuffix("weight") + "weight_scale"
        quantized[name], quantized[scale_name] = int8_per_channel(tensors[name], scheme)
        if weight_map is not None:
            weight_map[scale_name] = path.name
    if quantized:
        save_file({**tensors, **quantized}, path, metadata={"format": "pt"})
    return {name for name in quantized if name in targets}
