"""Tiny random checkpoints in the published Mini-Gemini release's on-disk layout, and tiny standard parts.

Everything is built locally from random weights: a CLIP vision tower in transformers naming, a ConvNeXt in timm naming
(as open_clip stores it), the release's mining / projector names, and an LLM whose config.json carries the release's
extra keys. Tokenizers are word-level `tokenizers` models with the special tokens of each LLM family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
)

CLIP = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "image_size": 32, "patch_size": 8}
CONVNEXT_WIDTHS = (8, 16, 24, 32)  # sum 80: the fused HR map's channels
CONVNEXT_DEPTHS = (1, 1, 2, 1)
LLM_HIDDEN = 48

WORDS = (  # noqa: SIM905  (a sentence of words reads better than a list)
    "a b c d e f g h i j k l m n o p q r s t u v w x y z the cat dog sat on mat what is in this image describe it "
    "picture color red blue green . , ? ! : USER ASSISTANT SYSTEM user model assistant system"
).split()

# Special tokens per tokenizer kind; the template detection looks at exactly these.
SPECIALS = {
    "vicuna": ["<unk>", "<s>", "</s>"],
    "mixtral": ["<unk>", "<s>", "</s>"],
    "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
    "llama_3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "yi": ["<unk>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}
ROLES = {  # bos, eos, unk, pad
    "vicuna": ("<s>", "</s>", "<unk>", None),
    "mixtral": ("<s>", "</s>", "<unk>", None),
    "gemma": ("<bos>", "<eos>", "<unk>", "<pad>"),
    "llama_3": ("<|begin_of_text|>", "<|eot_id|>", None, None),
    "yi": ("<|startoftext|>", "<|endoftext|>", "<unk>", None),
}


def make_tokenizer(kind: str = "vicuna") -> PreTrainedTokenizerFast:
    specials = SPECIALS[kind]
    vocab = {token: i for i, token in enumerate(specials + [w for w in WORDS if w not in specials])}
    unk = ROLES[kind][2] or specials[0]
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    bos, eos, unk_token, pad = ROLES[kind]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token=unk_token, pad_token=pad
    )
    others = [t for t in specials if t not in (bos, eos, unk_token, pad)]
    tokenizer.add_special_tokens({"additional_special_tokens": others})
    return tokenizer


def text_config_dict(family: str, vocab_size: int) -> dict:
    """The LLM part of a release config.json, with transformers-4.36-era keys."""
    config = {
        "hidden_size": LLM_HIDDEN,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "use_cache": True,
    }
    if family == "llama":
        config["pretraining_tp"] = 1
    if family == "gemma":
        # as transformers 4.38 wrote Gemma configs: "gelu", which transformers 5 reads as the tanh approximation
        config.update(head_dim=16, hidden_act="gelu", tie_word_embeddings=True)
    if family in ("mistral", "mixtral"):
        config["sliding_window"] = None
    if family == "mixtral":
        config.update(num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.02, output_router_logits=False)
    return config


def _randn(generator, *shape, scale=1.0):
    return torch.randn(*shape, generator=generator) * scale


def convnext_timm_tensors(generator, prefix: str, widths=CONVNEXT_WIDTHS, depths=CONVNEXT_DEPTHS) -> dict:
    """Random ConvNeXt weights in timm naming (`stem.{0,1}`, `stages.{i}.downsample.{0,1}`, `stages.{i}.blocks.{j}.*`)
    under `prefix` + `stem.` / `stages.`; pass prefix `model.vision_tower_aux.vision_` for the release layout."""
    g, t = generator, {}
    t[f"{prefix}stem.0.weight"] = _randn(g, widths[0], 3, 4, 4, scale=0.2)
    t[f"{prefix}stem.0.bias"] = _randn(g, widths[0], scale=0.1)
    t[f"{prefix}stem.1.weight"] = 1 + _randn(g, widths[0], scale=0.1)
    t[f"{prefix}stem.1.bias"] = _randn(g, widths[0], scale=0.1)
    for i, (width, depth) in enumerate(zip(widths, depths)):
        stage = f"{prefix}stages.{i}."
        if i:
            t[stage + "downsample.0.weight"] = 1 + _randn(g, widths[i - 1], scale=0.1)
            t[stage + "downsample.0.bias"] = _randn(g, widths[i - 1], scale=0.1)
            t[stage + "downsample.1.weight"] = _randn(g, width, widths[i - 1], 2, 2, scale=0.2)
            t[stage + "downsample.1.bias"] = _randn(g, width, scale=0.1)
        for j in range(depth):
            block = f"{stage}blocks.{j}."
            t[block + "conv_dw.weight"] = _randn(g, width, 1, 7, 7, scale=0.15)
            t[block + "conv_dw.bias"] = _randn(g, width, scale=0.1)
            t[block + "norm.weight"] = 1 + _randn(g, width, scale=0.1)
            t[block + "norm.bias"] = _randn(g, width, scale=0.1)
            t[block + "mlp.fc1.weight"] = _randn(g, 4 * width, width, scale=width**-0.5)
            t[block + "mlp.fc1.bias"] = _randn(g, 4 * width, scale=0.1)
            t[block + "mlp.fc2.weight"] = _randn(g, width, 4 * width, scale=(4 * width) ** -0.5)
            t[block + "mlp.fc2.bias"] = _randn(g, width, scale=0.1)
            t[block + "gamma"] = 0.5 + _randn(g, width, scale=0.1)
    return t


def _linear(generator, t, name, out_features, in_features):
    t[f"{name}.weight"] = _randn(generator, out_features, in_features, scale=in_features**-0.5)
    t[f"{name}.bias"] = _randn(generator, out_features, scale=0.1)


def _layer_norm(generator, t, name, width):
    t[f"{name}.weight"] = 1 + _randn(generator, width, scale=0.1)
    t[f"{name}.bias"] = _randn(generator, width, scale=0.1)


def release_llm_tensors(llm) -> dict:
    """The LLM's weights as the release (transformers 4.36) stored them: Mixtral per expert, no tied head."""
    tensors = {}
    for key, value in llm.state_dict().items():
        if key == "lm_head.weight" and llm.config.tie_word_embeddings:
            continue
        if key.endswith(".mlp.experts.gate_up_proj"):
            base = key.replace(".mlp.experts.gate_up_proj", ".block_sparse_moe.experts")
            half = value.shape[1] // 2
            for expert in range(value.shape[0]):
                tensors[f"{base}.{expert}.w1.weight"] = value[expert, :half].clone()
                tensors[f"{base}.{expert}.w3.weight"] = value[expert, half:].clone()
        elif key.endswith(".mlp.experts.down_proj"):
            base = key.replace(".mlp.experts.down_proj", ".block_sparse_moe.experts")
            for expert in range(value.shape[0]):
                tensors[f"{base}.{expert}.w2.weight"] = value[expert].clone()
        elif ".mlp.gate." in key and llm.config.model_type == "mixtral":
            tensors[key.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = value.clone()
        else:
            tensors[key] = value.clone()
    return tensors


@dataclass
class TinyRelease:
    path: Path
    tensors: dict  # every release tensor, by release name
    config: dict  # the release config.json
    llm: torch.nn.Module  # the reference LLM the LLM tensors came from
    tokenizer: PreTrainedTokenizerFast | None
    clip_config: CLIPVisionConfig


FAMILY_NAMES = {"llama": "Llama", "gemma": "Gemma", "mistral": "Mistral", "mixtral": "Mixtral"}
TOKENIZER_OF = {"llama": "vicuna", "gemma": "gemma", "mistral": "mixtral", "mixtral": "mixtral"}


def make_release(
    path: Path,
    family: str = "llama",
    hd: bool = False,
    prefix: str = "MGM",
    weights: str = "safetensors",  # safetensors (sharded + index) | single | bin (sharded + index)
    shards: int = 3,
    tokenizer: str | None = "default",
    seed: int = 0,
    clip_heads: int = 1,
    extra_vocab_rows: int = 0,
    llm_overrides: dict | None = None,
) -> TinyRelease:
    """Write a tiny release checkpoint to `path` and return what the reference forward needs (`llm_overrides`: keys
    of the LLM's config to change, e.g. a head size vLLM's CPU kernels have)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    kind = TOKENIZER_OF[family] if tokenizer == "default" else tokenizer
    tok = make_tokenizer(kind) if kind else None
    vocab_size = (len(tok) if tok is not None else 100) + extra_vocab_rows

    torch.manual_seed(seed)
    clip_config = CLIPVisionConfig(num_attention_heads=clip_heads, **CLIP)
    clip = CLIPVisionModel(clip_config)
    # transformers 4.36 (the release) named CLIPVisionModel weights `vision_model.*`
    tensors = {f"model.vision_tower.vision_tower.vision_model.{k}": v.clone() for k, v in clip.state_dict().items()}
    tensors.update(convnext_timm_tensors(generator, "model.vision_tower_aux.vision_"))
    hidden, aux = CLIP["hidden_size"], sum(CONVNEXT_WIDTHS)
    _layer_norm(generator, tensors, "model.vlm_uni_query_projector.0", hidden)
    _linear(generator, tensors, "model.vlm_uni_query_projector.1", hidden, hidden)
    _layer_norm(generator, tensors, "model.vlm_uni_aux_projector.0", aux)
    _linear(generator, tensors, "model.vlm_uni_aux_projector.1", hidden, aux)
    _layer_norm(generator, tensors, "model.vlm_uni_val_projector.0", aux)
    _linear(generator, tensors, "model.vlm_uni_val_projector.1", hidden, aux)
    _linear(generator, tensors, "model.mm_projector.0", LLM_HIDDEN, hidden)
    _linear(generator, tensors, "model.mm_projector.2", LLM_HIDDEN, LLM_HIDDEN)

    llm_config = {**text_config_dict(family, vocab_size), **(llm_overrides or {})}
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **llm_config)).eval()
    tensors.update(release_llm_tensors(llm))
    tensors = {k: v.contiguous() for k, v in tensors.items()}

    config = {
        **llm_config,
        "_name_or_path": "work_dirs/MGM/MGM-tiny",
        "architectures": [f"{prefix}{FAMILY_NAMES[family]}ForCausalLM"],
        "model_type": {"llama": "mgm"}.get(family, f"mgm_{family}"),
        "freeze_mm_mlp_adapter": False,
        "image_aspect_ratio": "pad",
        "image_global": hd,
        "image_grid": 2 if hd else 1,
        "image_grid_pinpoints": None,
        "image_size_aux": 128 if hd else 64,
        "mm_hidden_size": hidden,
        "mm_hidden_size_aux": aux,
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "model_zoo/OpenAI/clip-vit-large-patch14-336",
        "mm_vision_tower_aux": "model_zoo/OpenAI/openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup",
        "optimize_vision_tower": False,
        "optimize_vision_tower_aux": False,
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float32",
        "transformers_version": "4.36.2",
        "tune_mm_mlp_adapter": False,
        "use_cache": True,
        "use_mm_proj": True,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_weights(path, tensors, weights, shards)
    if tok is not None:
        tok.save_pretrained(path)
    return TinyRelease(path, tensors, config, llm, tok, clip_config)


def write_weights(path: Path, tensors: dict, weights: str, shards: int) -> None:
    keys = sorted(tensors)
    if weights == "single":
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    suffix, index_name = (".safetensors", "model.safetensors.index.json")
    stem = "model"
    if weights == "bin":
        suffix, index_name, stem = ".bin", "pytorch_model.bin.index.json", "pytorch_model"
    weight_map = {}
    for shard in range(shards):
        name = f"{stem}-{shard + 1:05d}-of-{shards:05d}{suffix}"
        part = {k: tensors[k] for k in keys[shard::shards]}
        if weights == "bin":
            torch.save(part, path / name)
        else:
            save_file(part, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (path / index_name).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


# ------------------------------------------------------------------------------------------ reference forward (§2)
# Written from DESIGN.md §2 on the raw release tensors with plain torch ops; shares no code with minigemini.

IMAGE_TOKEN_INDEX = -200  # the release's image marker in input ids


def _layer_norm_channels_first(x, weight, bias):
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], weight, bias, eps=1e-6).permute(0, 3, 1, 2)


def reference_convnext(t: dict, images: torch.Tensor, prefix: str = "model.vision_tower_aux.vision_") -> torch.Tensor:
    """timm ConvNeXt stem + stages; stages 1-3 upsampled (bilinear) to stage 0, concatenated -> (B, sum C, H/4, W/4)."""
    x = F.conv2d(images, t[f"{prefix}stem.0.weight"], t[f"{prefix}stem.0.bias"], stride=4)
    x = _layer_norm_channels_first(x, t[f"{prefix}stem.1.weight"], t[f"{prefix}stem.1.bias"])
    outputs, stage = [], 0
    while f"{prefix}stages.{stage}.blocks.0.conv_dw.weight" in t:
        s = f"{prefix}stages.{stage}."
        if f"{s}downsample.0.weight" in t:
            x = _layer_norm_channels_first(x, t[f"{s}downsample.0.weight"], t[f"{s}downsample.0.bias"])
            x = F.conv2d(x, t[f"{s}downsample.1.weight"], t[f"{s}downsample.1.bias"], stride=2)
        block = 0
        while f"{s}blocks.{block}.conv_dw.weight" in t:
            b = f"{s}blocks.{block}."
            y = F.conv2d(x, t[b + "conv_dw.weight"], t[b + "conv_dw.bias"], padding=3, groups=x.shape[1])
            y = y.permute(0, 2, 3, 1)
            y = F.layer_norm(y, y.shape[-1:], t[b + "norm.weight"], t[b + "norm.bias"], eps=1e-6)
            y = F.linear(
                F.gelu(F.linear(y, t[b + "mlp.fc1.weight"], t[b + "mlp.fc1.bias"])),
                t[b + "mlp.fc2.weight"],
                t[b + "mlp.fc2.bias"],
            )
            x = x + (y * t[b + "gamma"]).permute(0, 3, 1, 2)
            block += 1
        outputs.append(x)
        stage += 1
    size = outputs[0].shape[-2:]
    upsampled = [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outputs[1:]]
    return torch.cat([outputs[0], *upsampled], dim=1)


def reference_clip(release: TinyRelease, images: torch.Tensor) -> torch.Tensor:
    """CLIPVisionModel loaded with the release tensors; hidden_states[-2] without CLS."""
    prefix = "model.vision_tower.vision_tower.vision_model."
    clip = CLIPVisionModel(release.clip_config).eval()
    clip.load_state_dict({k[len(prefix) :]: v for k, v in release.tensors.items() if k.startswith(prefix)})
    return clip(pixel_values=images, output_hidden_states=True).hidden_states[-2][:, 1:]


def _ln_linear(t, name, x):
    x = F.layer_norm(x, x.shape[-1:], t[f"{name}.0.weight"], t[f"{name}.0.bias"], eps=1e-5)
    return F.linear(x, t[f"{name}.1.weight"], t[f"{name}.1.bias"])


def reference_mining(t: dict, tokens: torch.Tensor, hr_map: torch.Tensor) -> torch.Tensor:
    """Eq. 1: each LR token attends over its p x p window of the HR map; output = X + softmax(q k^T / sqrt d) v."""
    batch, count, _ = tokens.shape
    n = round(count**0.5)
    channels, side = hr_map.shape[1], hr_map.shape[-1]
    p = side // n
    windows = hr_map.permute(0, 2, 3, 1).reshape(batch, n, p, n, p, channels)
    windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(batch, n * n, p * p, channels)
    q = _ln_linear(t, "model.vlm_uni_query_projector", tokens)
    k = _ln_linear(t, "model.vlm_uni_aux_projector", windows)
    v = _ln_linear(t, "model.vlm_uni_val_projector", windows)
    attention = (q[:, :, None] @ (k.transpose(-1, -2) / k.shape[-1] ** 0.5)).softmax(-1)
    return tokens + (attention @ v).mean(2)


def reference_image_tokens(release: TinyRelease, pixel_values: torch.Tensor, high_res: torch.Tensor) -> torch.Tensor:
    """(B, [V,] 3, S, S) LR views [global, crops row-major] + (B, 3, H, H) HR -> (B, V*N, LLM hidden)."""
    t, config = release.tensors, release.config
    hr_map = reference_convnext(t, high_res)
    grid = config["image_grid"]
    if grid == 1:
        features = reference_mining(t, reference_clip(release, pixel_values), hr_map)
    else:
        batch, views = pixel_values.shape[:2]
        lr = reference_clip(release, pixel_values.flatten(0, 1)).reshape(batch, views, -1, config["mm_hidden_size"])
        global_map = F.interpolate(hr_map, scale_factor=1 / grid, mode="bilinear", align_corners=False)
        parts = [reference_mining(t, lr[:, 0], global_map)]
        cell = hr_map.shape[-1] // grid
        for row in range(grid):
            for col in range(grid):
                window = hr_map[:, :, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]
                parts.append(reference_mining(t, lr[:, 1 + row * grid + col], window))
        features = torch.cat(parts, dim=1)
    hidden = F.gelu(F.linear(features, t["model.mm_projector.0.weight"], t["model.mm_projector.0.bias"]))
    return F.linear(hidden, t["model.mm_projector.2.weight"], t["model.mm_projector.2.bias"])


def reference_logits(release: TinyRelease, ids: list[int], pixel_values, high_res) -> torch.Tensor:
    """The release's splice: text embeddings, each IMAGE_TOKEN_INDEX replaced by that image's tokens, then the LLM."""
    images = reference_image_tokens(release, pixel_values, high_res)
    embed = release.llm.get_input_embeddings()
    pieces, segment, image = [], [], 0
    for token in ids + [None]:
        if token is None or token == IMAGE_TOKEN_INDEX:
            if segment:
                pieces.append(embed(torch.tensor(segment)))
            segment = []
            if token == IMAGE_TOKEN_INDEX:
                pieces.append(images[image])
                image += 1
        else:
            segment.append(token)
    assert image == images.shape[0]
    return release.llm(inputs_embeds=torch.cat(pieces)[None]).logits
