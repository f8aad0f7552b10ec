"""Memory planner: what a Mini-Gemini needs, from its config alone (the model is built on the meta device, no weights).

Inference: the weights (the LLM's linear layers in bf16, int8 or nf4; everything else in bf16, as quantised loading
keeps it), the KV cache at a context length and batch, and the transient activations at the peak of one
``generate()``: the prefill's last decoder layer (the KV cache full by then) or, before it, the vision towers.
Training: full fine-tuning (AdamW, bf16 weights and gradients with fp32 master weights and moments: 16 bytes per
trained parameter), LoRA, QLoRA and ZeRO-3 over N GPUs (everything sharded N ways).  Training activations are not
counted (gradient checkpointing keeps them small beside these).

``RELEASE_SIZES`` are the published MGM models' shapes (CLIP ViT-L/336 + ConvNeXt-L, HR 768 px, HD 1536 px).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minigemini.configuration import MiniGeminiConfig
from minigemini.modeling import VISION_MODULES, MiniGeminiForConditionalGeneration

__all__ = ["GPU_SIZES_GB", "RELEASE_SIZES", "Estimate", "estimate", "plan_table", "release_config"]

_LLAMA = {"model_type": "llama", "vocab_size": 32000, "max_position_embeddings": 4096}
#: The published sizes' LLMs: Gemma-2B, Vicuna-7B/13B, Mixtral-8x7B, Nous-Hermes-2-Yi-34B.
RELEASE_SIZES: dict[str, dict] = {
    "2B": {
        "model_type": "gemma",
        "hidden_size": 2048,
        "intermediate_size": 16384,
        "num_hidden_layers": 18,
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "vocab_size": 256000,
    },
    "7B": {
        **_LLAMA,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
    "13B": {
        **_LLAMA,
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
    },
    "8x7B": {
        "model_type": "mixtral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "vocab_size": 32000,
    },
    "34B": {
        **_LLAMA,
        "hidden_size": 7168,
        "intermediate_size": 20480,
        "num_hidden_layers": 60,
        "num_attention_heads": 56,
        "num_key_value_heads": 8,
        "vocab_size": 64000,
    },
}
GPU_SIZES_GB = (16, 24, 48, 80)
#: bytes per weight of a quantised linear layer, its scales included (bitsandbytes: int8 one fp32 scale per row is
#: added per layer; nf4 with double quantisation: 4 bits + an 8-bit absmax per 64 weights + fp32 per 256 absmaxes)
_WEIGHT_BYTES = {"bf16": 2.0, "int8": 1.0, "nf4": 0.5 + 1 / 64 + 4 / (64 * 256)}


def release_config(size: str, hd: bool = False) -> MiniGeminiConfig:
    """The config of a published MGM size (``RELEASE_SIZES``), normal or HD."""
    return MiniGeminiConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "image_size": 336,
            "patch_size": 14,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "projection_dim": 768,
        },
        vision_aux_config={"model_type": "convnext", "hidden_sizes": [192, 384, 768, 1536], "depths": [3, 3, 27, 3]},
        text_config=RELEASE_SIZES[size],
        image_size_aux=1536 if hd else 768,
        image_grid=2 if hd else 1,
        image_global=hd,
    )


@dataclass
class Parts:
    """Parameter counts of a model, by what quantisation and training do to them."""

    vision: int  #: towers, mining, projector: never quantised
    llm_linear: int  #: the LLM's linear weights: quantised
    llm_linear_rows: int  #: their output rows (one int8 scale each)
    llm_other: int  #: embeddings, norms, biases, LM head: kept in bf16
    lora: int  #: LoRA adapter parameters at rank ``lora_rank`` on every LLM linear layer
    towers: int  #: the vision towers (frozen in stage 2)


def count_parts(config: MiniGeminiConfig, lora_rank: int = 128) -> Parts:
    with torch.device("meta"):
        model = MiniGeminiForConditionalGeneration(config)
    inner = model.model
    vision = sum(
        p.numel()
        for name in VISION_MODULES
        if getattr(inner, name) is not None
        for p in getattr(inner, name).parameters()
    )
    towers = sum(
        p.numel()
        for name in VISION_MODULES[:2]
        if getattr(inner, name) is not None
        for p in getattr(inner, name).parameters()
    )
    linear = lora = rows = 0
    for module in inner.language_model.modules():
        if isinstance(module, nn.Linear):
            linear += module.weight.numel()
            rows += module.out_features
            lora += lora_rank * (module.in_features + module.out_features)
    experts = _expert_weights(inner.language_model)  # MoE experts are stacked tensors, not nn.Linear
    total = sum(p.numel() for p in model.parameters())
    linear += experts
    return Parts(vision, linear, rows, total - vision - linear, lora, towers)


def _expert_weights(language_model: nn.Module) -> int:
    return sum(p.numel() for name, p in language_model.named_parameters() if ".experts." in name and p.dim() == 3)


@dataclass
class Estimate:
    weights: float  #: bytes
    kv_cache: float  #: bytes
    activations: float = 0.0  #: the prefill's largest transient beside the full KV cache (``prefill_activation_bytes``)
    vision: float = 0.0  #: the vision side's largest transient, before the prefill (``vision_activation_bytes``)

    @property
    def total(self) -> float:
        """The peak of one ``generate()``: the towers run before the KV cache exists, the prefill's last layer beside
        the whole of it (decoding adds one token at a time to the cache and holds far less than the prefill)."""
        return self.weights + max(self.kv_cache + self.activations, self.vision)


def weight_bytes(parts: Parts, scheme: str = "bf16", dtype_bytes: int = 2) -> float:
    """The loaded model's weights: the LLM's linear layers in ``scheme``, everything else in the load's dtype."""
    quantised = parts.llm_linear * _WEIGHT_BYTES[scheme]
    if scheme == "int8":
        quantised += 4 * parts.llm_linear_rows
    elif scheme == "bf16":
        quantised = parts.llm_linear * dtype_bytes
    return quantised + (parts.vision + parts.llm_other) * dtype_bytes


def kv_cache_bytes(config: MiniGeminiConfig, context: int, batch: int = 1, dtype_bytes: int = 2) -> float:
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * head_dim * context * batch * dtype_bytes


def prefill_activation_bytes(
    config: MiniGeminiConfig, tokens: int, batch: int = 1, scheme: str = "bf16", dtype_bytes: int = 2
) -> float:
    """The largest transient of the prefill beside the KV cache, for ``batch`` prompts of ``tokens`` (visual included).

    Counted in units of one token's ``hidden`` or ``intermediate`` vector, as measured on the default model (torch's
    profiler, ``profiling.peak_memory_bytes``): the peak is in the last layer's MLP.
    """
    text = config.text_config
    hidden, inter, rows = text.hidden_size, text.intermediate_size, batch * tokens
    # the residual stream: the prompt's embeddings (held by the caller), the layer's input, its residual, the norm's output
    stream = 4 * hidden * rows * dtype_bytes
    # MLP: act(gate), up and their product live together before down_proj (an MoE expert sees at most every token);
    # down_proj of a quantised layer dequantises its weight (bitsandbytes) beside its input and output; LLM.int8()
    # computes in int32 and dequantises to a new tensor
    mlp = 3 * inter * rows * dtype_bytes
    if scheme != "bf16":
        mlp = max(mlp, (inter + hidden) * rows * dtype_bytes + hidden * inter * dtype_bytes)
    if scheme == "int8":
        mlp += inter * rows * (4 + dtype_bytes)
    # attention: q, k, v and the output, none wider than hidden; SDPA (flash on CPU and CUDA) never holds the scores,
    # eager holds them beside their fp32 softmax
    attention = 3 * hidden * rows * dtype_bytes
    if getattr(text, "_attn_implementation", None) == "eager":
        attention += rows * text.num_attention_heads * tokens * (dtype_bytes + 4)
    # generate() asks the LM head for the last position only (logits_to_keep=1) and copies those logits to fp32
    logits = batch * text.vocab_size * (dtype_bytes + 4)
    return stream + max(mlp, attention, logits)


def vision_activation_bytes(config: MiniGeminiConfig, images: int = 1, dtype_bytes: int = 2) -> float:
    """The vision side's largest transient for ``images`` images (the towers keep the load's dtype)."""
    vision = config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1  # the class token too
    # the ViT returns every layer's hidden states (the feature layer is picked from them) plus one layer's fc1 and act
    width = vision.hidden_size
    low_res = config.num_views * tokens * ((vision.num_hidden_layers + 1) * width + 2 * vision.intermediate_size)
    if not config.patch_info_mining:
        return images * low_res * dtype_bytes
    # the ConvNeXt's four stage maps, three of them upsampled to the first one's size, and their concatenation (the
    # HR map) at once; mining then holds the map, the LR tokens and a pooled copy p times smaller than the map
    sizes = config.vision_aux_config.hidden_sizes
    side = config.image_size_aux // config.vision_aux_config.patch_size
    stages = sum(channels * (side >> stage) ** 2 for stage, channels in enumerate(sizes))
    high_res = stages + (sum(sizes[1:]) + sum(sizes)) * side**2
    lr_features = config.num_views * (tokens - 1) * width
    return images * max(low_res, lr_features + high_res) * dtype_bytes


def estimate(
    config: MiniGeminiConfig, scheme: str = "bf16", context: int = 4096, batch: int = 1, dtype_bytes: int = 2
) -> Estimate:
    """Inference memory: weights in ``scheme`` (bf16, int8, nf4; the rest in ``dtype_bytes``), the KV cache of
    ``batch`` x ``context`` tokens (visual tokens included) and the transients of a prefill over all of them."""
    return Estimate(
        weight_bytes(count_parts(config), scheme, dtype_bytes),
        kv_cache_bytes(config, context, batch, dtype_bytes),
        prefill_activation_bytes(config, context, batch, scheme, dtype_bytes),
        vision_activation_bytes(config, batch, dtype_bytes),
    )


def training_bytes(parts: Parts, mode: str, gpus: int = 1) -> float:
    """Weights, gradients and AdamW state for stage-2 training (towers frozen): ``full``, ``lora``, ``qlora`` or
    ``zero3`` (full, sharded over ``gpus``)."""
    trained = parts.vision - parts.towers  # mining and projector train in every mode
    frozen_towers = 2 * parts.towers
    llm = parts.llm_linear + parts.llm_other
    if mode in ("full", "zero3"):
        total = 16 * (trained + llm) + frozen_towers
        return total / gpus if mode == "zero3" else total
    adapters = 16 * (parts.lora + trained)
    if mode == "lora":
        return adapters + 2 * llm + frozen_towers
    if mode == "qlora":
        return adapters + weight_bytes(Parts(0, parts.llm_linear, 0, parts.llm_other, 0, 0), "nf4") + frozen_towers
    raise ValueError(f"unknown training mode {mode!r}: full, lora, qlora or zero3")


def _fits(size: float) -> str:
    return next((f"{gb} GB" for gb in GPU_SIZES_GB if size <= gb * 1e9 * 0.9), "> 80 GB")


def plan_table(context: int = 4096, batch: int = 1, gpus: int = 8) -> str:
    """Markdown: GB per published size and mode, and the smallest 16/24/48/80 GB GPU that holds it (90 % usable);
    inference at its peak (``Estimate.total``: weights, KV cache and the prefill's or the towers' activations)."""
    head = (
        f"| model | bf16 | int8 | nf4 | smallest GPU bf16 / int8 / nf4 | train full | LoRA | QLoRA | "
        f"ZeRO-3 / {gpus} GPUs |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for size in RELEASE_SIZES:
        for hd in (False, True):
            config = release_config(size, hd)
            parts, tokens = count_parts(config), context + config.image_seq_length
            kv, vision = kv_cache_bytes(config, tokens, batch), vision_activation_bytes(config, batch)
            inference = [
                Estimate(
                    weight_bytes(parts, scheme), kv, prefill_activation_bytes(config, tokens, batch, scheme), vision
                ).total
                for scheme in ("bf16", "int8", "nf4")
            ]
            training = [training_bytes(parts, mode, gpus) for mode in ("full", "lora", "qlora", "zero3")]
            cells = [f"{value / 1e9:.1f}" for value in inference]
            fits = " / ".join(_fits(value) for value in inference)
            rows.append(
                f"| MGM-{size}{'-HD' if hd else ''} | {' | '.join(cells)} | {fits} | "
                + " | ".join(f"{value / 1e9:.1f}" for value in training)
                + " |"
            )
    return "\n".join(rows)
