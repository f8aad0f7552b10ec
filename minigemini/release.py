"""The checkpoint format of the published Mini-Gemini (MGM) release, read into this package's model.

A release directory (e.g. `YanweiLi/MGM-7B`) holds one LLaMA/Gemma/Mistral/Mixtral causal LM whose `config.json` carries
extra `mm_*` / `image_*` keys, and whose weights also hold the two vision towers, the mining layers and the projector
under the release's own names. It is recognised by those config and weight keys, never by its path.

How it loads: the release config is translated into a `MiniGeminiConfig` (tower configs derived from the weight
*shapes*, because `mm_vision_tower` names a local path or hub id that usually cannot be fetched), and the weights are
read straight from the release shards by `transformers`' own loader with a `key_mapping` (`RELEASE_KEY_MAPPING`). The
loader then also applies transformers' conversions of legacy LLM weights (e.g. Mixtral's per-expert `w1/w2/w3`, fused
in transformers 5). Keys that match nothing known, and weights the model needs but the checkpoint lacks, are errors.

The release marks images with IMAGE_TOKEN_INDEX = -200, which is not a token; here `<image>` is added to the
tokenizer, the embeddings grow by one row if needed, and `config.image_token_id` is set. The chat template is chosen
from the tokenizer's special tokens and the LLM family, as the release did per model (overridable).

Entry points: `is_release_checkpoint` and `read_release_checkpoint`, `release_config`, `release_processor` and
`check_loading_info`, used by `MiniGeminiForConditionalGeneration.from_pretrained` (which converts a release on load)
and by `minigemini.convert` (`mgm convert`, which writes it in this package's format).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, ConvNextConfig
from transformers.utils import logging as tf_logging

from .configuration import MiniGeminiConfig
from .processing import build_processor
from .templates import get_template

__all__ = [
    "RELEASE_KEY_MAPPING",
    "ReleaseCheckpoint",
    "build_config",
    "component_of",
    "check_loading_info",
    "convnext_config_from_shapes",
    "is_release_checkpoint",
    "quiet_transformers",
    "read_release_checkpoint",
    "release_config",
    "release_processor",
    "release_template_for",
    "rename_release_key",
    "summarise",
]

# ----------------------------------------------------------------------------------------------------- release facts

#: config.json keys that only a Mini-Gemini release has (any one of them marks the layout, with the weight keys).
RELEASE_CONFIG_KEYS = (
    "mm_vision_tower",
    "mm_vision_tower_aux",
    "mm_hidden_size_aux",
    "image_size_aux",
    "image_grid",
    "image_global",
)
#: keys of the release config that describe the multimodal wrapper, not the LLM (dropped from text_config).
_MULTIMODAL_KEY_PREFIXES = (
    "mm_",
    "image_",
    "tokenizer_",
    "use_mm_",
    "tune_mm_",
    "freeze_mm_",
    "unfreeze_mm_",
    "pretrain_mm_",
    "optimize_vision_tower",
    "vision_tower",
    "model_path",
)
_NOT_LLM_KEYS = {"architectures", "model_type", "_name_or_path", "transformers_version", "auto_map"}

ARCHITECTURE_PATTERN = re.compile(r"^(?:MiniGemini|MGM)(Llama|Gemma|Mistral|Mixtral)ForCausalLM$")
_FAMILIES = {"Llama": "llama", "Gemma": "gemma", "Mistral": "mistral", "Mixtral": "mixtral"}
# Fallback when `architectures` is absent: the release's registered model_type names.
_RELEASE_MODEL_TYPES = {
    f"{prefix}{suffix}": family
    for prefix in ("mgm", "mini_gemini")
    for suffix, family in (("", "llama"), ("_gemma", "gemma"), ("_mistral", "mistral"), ("_mixtral", "mixtral"))
}

# transformers < 5 (the release) nests CLIPVisionModel weights under `vision_model.`; transformers 5 drops that level
# when loading (its own CLIPVisionModel conversion), so both spellings load.
CLIP_PREFIX = "model.vision_tower.vision_tower.vision_model."
CLIP_PREFIX_FLAT = "model.vision_tower.vision_tower."
CONVNEXT_PREFIX = "model.vision_tower_aux."

#: Where each release weight comes from, by key: (component, pattern). A key matching none is unknown.
RELEASE_COMPONENTS = (
    ("the LR vision tower (CLIP)", re.compile(r"^model\.vision_tower\.vision_tower\.")),
    ("the HR vision tower (ConvNeXt)", re.compile(r"^model\.vision_tower_aux\.vision_(stem|stages)\.")),
    ("the patch info mining layers", re.compile(r"^model\.vlm_uni_(query|aux|val)_projector\.[01]\.(weight|bias)$")),
    ("the projector", re.compile(r"^model\.mm_projector\.(\d+\.)?(weight|bias)$")),
    ("the language model", re.compile(r"^(model\.(embed_tokens|layers|norm)\.|lm_head\.)")),
)
#: Weights that older transformers versions saved but that are recomputed buffers today.
_IGNORABLE_KEY = re.compile(r"(\.position_ids|\.rotary_emb\.inv_freq)$")

#: release key -> this package's key, in transformers' `key_mapping` form: applied in order, each regex may fire on the
#: output of the previous ones, at most one capture group each. `rename_release_key` applies the same table.
RELEASE_KEY_MAPPING = {
    # open_clip / timm ConvNeXt block leaves -> transformers ConvNextLayer names (same shapes; timm's stem and
    # downsample LayerNorm2d are channels-first like transformers' ConvNextLayerNorm there)
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.conv_dw\.": r"\1.dwconv.",
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.norm\.": r"\1.layernorm.",
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.mlp\.fc1\.": r"\1.pwconv1.",
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.mlp\.fc2\.": r"\1.pwconv2.",
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.gamma$": r"\1.layer_scale_parameter",
    r"^model\.vision_tower_aux\.vision_stages\.(\d+)\.blocks\.": (
        r"model.vision_tower_aux.convnext.encoder.stages.\1.layers."
    ),
    r"^model\.vision_tower_aux\.vision_stages\.(\d+)\.downsample\.": (
        r"model.vision_tower_aux.convnext.encoder.stages.\1.downsampling_layer."
    ),
    r"^model\.vision_tower_aux\.vision_stem\.0\.": "model.vision_tower_aux.convnext.embeddings.patch_embeddings.",
    r"^model\.vision_tower_aux\.vision_stem\.1\.": "model.vision_tower_aux.convnext.embeddings.layernorm.",
    # CLIP keeps transformers' own names, one wrapper level deeper
    r"^model\.vision_tower\.vision_tower\.": "model.vision_tower.model.",
    # mining: query / key ("aux") / value, each (LayerNorm, Linear)
    r"^model\.vlm_uni_query_projector\.": "model.mining.query.",
    r"^model\.vlm_uni_aux_projector\.": "model.mining.key.",
    r"^model\.vlm_uni_val_projector\.": "model.mining.value.",
    # a "linear" projector is one bare nn.Linear in the release, the first layer of a Sequential here
    r"^model\.mm_projector\.(weight|bias)$": r"model.mm_projector.0.\1",
    # the LLM body moves under language_model; lm_head keeps its name
    r"^model\.(embed_tokens|layers|norm)\.": r"model.language_model.\1.",
}
_COMPILED_MAPPING = [(re.compile(pattern), replacement) for pattern, replacement in RELEASE_KEY_MAPPING.items()]

#: Weights of this package's model that a release does not have and does not need.
_UNUSED_OWN_KEYS = re.compile(r"^model\.vision_tower_aux\.convnext\.layernorm\.(weight|bias)$")  # pooled head norm

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_SAFETENSORS_SINGLE = "model.safetensors"
_BIN_INDEX = "pytorch_model.bin.index.json"
_BIN_SINGLE = "pytorch_model.bin"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def rename_release_key(key: str) -> str:
    """A release weight name -> this package's name (LLM keys before transformers' own legacy conversions)."""
    for pattern, replacement in _COMPILED_MAPPING:
        key = pattern.sub(replacement, key, count=1)
    return key


def component_of(key: str) -> str | None:
    for component, pattern in RELEASE_COMPONENTS:
        if pattern.search(key):
            return component
    return None


# ----------------------------------------------------------------------------------------------- reading the layout


@dataclasses.dataclass
class ReleaseCheckpoint:
    """A release directory, read and checked (`read_release_checkpoint`).

    directory: where it is; config: its config.json; shapes: every tensor's name -> shape; family: the LLM's
    transformers model_type (llama, gemma, mistral, mixtral; Vicuna, Yi and LLaMA-3 are llama).
    """

    directory: Path
    config: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    family: str

    def keys(self, prefix: str = "") -> list[str]:
        return [key for key in self.shapes if key.startswith(prefix)]

    def has_tokenizer(self) -> bool:
        return any((self.directory / name).is_file() for name in _TOKENIZER_FILES)


def _llm_family(config: dict[str, Any], config_path: Path) -> str:
    """The LLM family from the architecture name (MGM* or MiniGemini*), else from the release's model_type."""
    architectures = config.get("architectures") or []
    for name in architectures:
        match = ARCHITECTURE_PATTERN.match(name)
        if match:
            return _FAMILIES[match.group(1)]
    if not architectures and config.get("model_type") in _RELEASE_MODEL_TYPES:
        return _RELEASE_MODEL_TYPES[config["model_type"]]
    found = architectures[0] if architectures else config.get("model_type")
    known = ", ".join(f"{prefix}{family}ForCausalLM" for prefix in ("MGM", "MiniGemini") for family in _FAMILIES)
    raise ValueError(f"{config_path}: unknown architecture {found!r}; a Mini-Gemini release is one of {known}")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the {what} is damaged") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object (the {what})")
    return data


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in one weight file, without reading the data."""
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} is missing")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        except (SafetensorError, OSError) as error:
            raise ValueError(f"weight file {path} is damaged or truncated: {error}") from error
    try:
        state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    except Exception as error:  # torch raises many types for a bad zip / pickle
        raise ValueError(f"weight file {path} is damaged or truncated: {type(error).__name__}: {error}") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weight file {path} does not hold a state dict")
    return {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}


def _weight_files(directory: Path) -> list[Path]:
    """The weight files a directory names, index first; every file the index names must exist."""
    for index_name, single_name in ((_SAFETENSORS_INDEX, _SAFETENSORS_SINGLE), (_BIN_INDEX, _BIN_SINGLE)):
        index_path = directory / index_name
        if index_path.is_file():
            weight_map = _read_json(index_path, "weight index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index_path} has no weight_map")
            names = sorted(set(weight_map.values()))
            missing = [name for name in names if not (directory / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{index_path.name} names {len(missing)} weight file(s) that are not in {directory}: "
                    f"{', '.join(missing)}; the download is incomplete"
                )
            return [directory / name for name in names]
        if (directory / single_name).is_file():
            return [directory / single_name]
    raise FileNotFoundError(
        f"no weights in {directory}: looked for {_SAFETENSORS_INDEX}, {_SAFETENSORS_SINGLE}, {_BIN_INDEX}, "
        f"{_BIN_SINGLE}"
    )


def _index_map(directory: Path) -> dict[str, str] | None:
    for index_name in (_SAFETENSORS_INDEX, _BIN_INDEX):
        if (directory / index_name).is_file():
            return _read_json(directory / index_name, "weight index")["weight_map"]
    return None


def _download(repo_id: str) -> Path:
    """Config, tokenizer and safetensors weights of a hub repo (its .bin weights only when it has no safetensors)."""
    from huggingface_hub import snapshot_download

    metadata = ["*.json", "*.model", "*.txt", "*.tiktoken"]
    directory = Path(snapshot_download(repo_id, allow_patterns=[*metadata, "*.safetensors"]))
    if not any(directory.glob("*.safetensors")):
        directory = Path(snapshot_download(repo_id, allow_patterns=[*metadata, "*.bin"]))
    return directory


def resolve_checkpoint_dir(source: str | os.PathLike) -> Path:
    """A local directory as is; a hub id (`owner/name`) downloaded with huggingface_hub, with a clear error offline."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{source} is a file; pass the checkpoint's directory")
    text = os.fspath(source)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith("."):
        try:
            return _download(text)
        except Exception as error:  # offline, unknown repo, gated, ...: all say the same to the user
            reason = str(error).splitlines()[0] if str(error) else ""
            raise FileNotFoundError(
                f"{text} is not a local directory, and it could not be fetched from the Hugging Face Hub "
                f"({type(error).__name__}: {reason}). Missing: its config.json, "
                f"weights ({_SAFETENSORS_INDEX} + model-*.safetensors, or pytorch_model*.bin) and tokenizer files; "
                f"download the repository where there is a network and pass its directory."
            ) from error
    raise FileNotFoundError(f"{source}: no such directory")


def read_release_checkpoint(source: str | os.PathLike) -> ReleaseCheckpoint:
    """Read and check a release directory's config and weight layout; raise a clear error for anything else.

    Only file headers are read (safetensors) or .bin files memory-mapped onto the meta device, so this is cheap even
    for a 34B model: every problem with the files surfaces here, before anything is built or written.
    """
    directory = resolve_checkpoint_dir(source)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json; it is not a model checkpoint")
    config = _read_json(config_path, "model config")
    if config.get("model_type") == MiniGeminiConfig.model_type:
        raise ValueError(f"{directory} is already in this package's format; load it with from_pretrained")

    files = _weight_files(directory)
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, Path] = {}
    for path in files:
        for key, shape in _tensor_shapes(path).items():
            shapes[key] = shape
            where[key] = path
    index = _index_map(directory)
    if index is not None:
        absent = sorted(key for key, name in index.items() if key not in shapes or where[key].name != name)
        if absent:
            raise ValueError(
                f"the weight index names {len(absent)} tensor(s) that are not in the file it gives, e.g. "
                f"{absent[0]!r} in {index[absent[0]]}; the shards do not match the index"
            )

    marked_by_config = [key for key in RELEASE_CONFIG_KEYS if key in config]
    has_towers = any(key.startswith(CLIP_PREFIX_FLAT) for key in shapes) or any(
        key.startswith("model.vlm_uni_") for key in shapes
    )
    if not marked_by_config and not has_towers:
        raise ValueError(
            f"{directory} is not a Mini-Gemini release checkpoint: its config.json has none of "
            f"{', '.join(RELEASE_CONFIG_KEYS)} and its weights have no {CLIP_PREFIX_FLAT}* or model.vlm_uni_* tensors"
        )
    family = _llm_family(config, config_path)

    unknown = sorted(k for k in shapes if component_of(k) is None and not _IGNORABLE_KEY.search(k))
    if unknown:
        shown = ", ".join(unknown[:8]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 8 else "")
        raise ValueError(f"{directory} has weights this converter does not know, refusing to drop them: {shown}")
    present = {component_of(k) for k in shapes}
    required = {
        "the LR vision tower (CLIP)": f"{CLIP_PREFIX_FLAT}*",
        "the HR vision tower (ConvNeXt)": f"{CONVNEXT_PREFIX}vision_stem.* / vision_stages.*",
        "the patch info mining layers": "model.vlm_uni_{query,aux,val}_projector.*",
        "the projector": "model.mm_projector.*",
        "the language model": "model.embed_tokens.*, model.layers.*",
    }
    lacking = [f"{component} ({keys})" for component, keys in required.items() if component not in present]
    if lacking:
        raise ValueError(f"{directory} lacks the weights of {'; '.join(lacking)}")
    return ReleaseCheckpoint(directory, config, shapes, family)


def is_release_checkpoint(source: str | os.PathLike) -> bool:
    """Cheap test (config.json only) for `from_pretrained`: is this a release directory (or cached hub repo)?"""
    path = Path(source).expanduser()
    config_path = path / "config.json"
    if not path.is_dir():
        try:  # a hub id: look at its config.json only if it is available (cache or network); else not ours to judge
            from transformers.utils import cached_file

            resolved = cached_file(os.fspath(source), "config.json", _raise_exceptions_for_missing_entries=False)
        except Exception:
            return False
        if resolved is None:
            return False
        config_path = Path(resolved)
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (
        isinstance(config, dict)
        and config.get("model_type") != MiniGeminiConfig.model_type
        and any(key in config for key in RELEASE_CONFIG_KEYS)
    )


# ------------------------------------------------------------------------------------------------- config from shapes


def _indices(keys: Iterable[str], pattern: str) -> list[int]:
    compiled = re.compile(pattern)
    return sorted({int(m.group(1)) for key in keys if (m := compiled.match(key))})


def clip_config_from_shapes(shapes: dict[str, tuple[int, ...]], prefix: str, tower: str | None) -> CLIPVisionConfig:
    """CLIPVisionConfig from the tower's tensor shapes (hidden, layers, MLP, patch and image size).

    Head count is not in any shape: it comes from the tower's own config when `tower` (the release's
    `mm_vision_tower`) is a local directory, else from OpenAI CLIP's 64-wide heads (ViT-L/14: 1024 -> 16 heads).
    """
    try:
        hidden, channels, patch, _ = shapes[prefix + "embeddings.patch_embedding.weight"]
        positions = shapes[prefix + "embeddings.position_embedding.weight"][0]
        intermediate = shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0]
    except KeyError as error:
        raise ValueError(f"the CLIP tower lacks {error.args[0]}") from error
    layers = len(_indices(shapes, re.escape(prefix) + r"encoder\.layers\.(\d+)\."))
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ValueError(f"the CLIP tower has {positions} positions, which is not 1 + a square number of patches")
    derived = {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_channels": channels,
        "patch_size": patch,
        "image_size": grid * patch,
    }
    if tower and (Path(tower).expanduser() / "config.json").is_file():
        config = CLIPVisionConfig.from_pretrained(Path(tower).expanduser())
        differing = {k: (getattr(config, k), v) for k, v in derived.items() if getattr(config, k) != v}
        if differing:
            raise ValueError(f"the CLIP tower config at {tower} disagrees with the checkpoint's weights: {differing}")
        return config
    if hidden % 64:
        raise ValueError(
            f"cannot tell the CLIP tower's head count from its weights (hidden size {hidden} is not a multiple of 64); "
            f"put the tower's config.json at the path its mm_vision_tower names ({tower})"
        )
    return CLIPVisionConfig(num_attention_heads=hidden // 64, **derived)


def convnext_config_from_shapes(
    shapes: dict[str, tuple[int, ...]], prefix: str = CONVNEXT_PREFIX, image_size: int = 768
) -> ConvNextConfig:
    """ConvNextConfig from timm-named tensor shapes under `prefix` (`vision_stem.*` / `vision_stages.*`)."""
    try:
        width, channels, patch, _ = shapes[prefix + "vision_stem.0.weight"]
    except KeyError as error:
        raise ValueError(f"the ConvNeXt tower lacks {error.args[0]}") from error
    stages = _indices(shapes, re.escape(prefix) + r"vision_stages\.(\d+)\.")
    if stages != list(range(len(stages))) or not stages:
        raise ValueError(f"the ConvNeXt tower's stages are not numbered 0..n-1: {stages}")
    hidden_sizes, depths = [], []
    for stage in stages:
        blocks = _indices(shapes, re.escape(prefix) + rf"vision_stages\.{stage}\.blocks\.(\d+)\.")
        if not blocks:
            raise ValueError(f"ConvNeXt stage {stage} has no blocks")
        hidden_sizes.append(shapes[f"{prefix}vision_stages.{stage}.blocks.0.conv_dw.weight"][0])
        depths.append(len(blocks))
    if hidden_sizes[0] != width:
        raise ValueError(f"ConvNeXt stem width {width} differs from stage 0's {hidden_sizes[0]}")
    has_scale = f"{prefix}vision_stages.0.blocks.0.gamma" in shapes
    return ConvNextConfig(
        num_channels=channels,
        patch_size=patch,
        num_stages=len(stages),
        hidden_sizes=hidden_sizes,
        depths=depths,
        layer_norm_eps=1e-6,  # timm's ConvNeXt norms
        layer_scale_init_value=1e-6 if has_scale else 0.0,
        drop_path_rate=0.0,
        image_size=image_size,
    )


def _projector_type(checkpoint: ReleaseCheckpoint) -> str:
    layers = _indices(checkpoint.shapes, r"model\.mm_projector\.(\d+)\.weight$")
    if "model.mm_projector.weight" in checkpoint.shapes and not layers:
        derived = "linear"
    elif layers and layers == list(range(0, 2 * len(layers), 2)):
        derived = f"mlp{len(layers)}x_gelu"
    else:
        raise ValueError(f"unrecognised projector layout: Linear layers at mm_projector.{layers}")
    declared = checkpoint.config.get("mm_projector_type", derived)
    if declared != derived:
        raise ValueError(f"config.json says mm_projector_type={declared!r} but the weights are a {derived!r} projector")
    return derived


def _text_config(checkpoint: ReleaseCheckpoint):
    llm_keys = {
        key: value
        for key, value in checkpoint.config.items()
        if key not in _NOT_LLM_KEYS and not key.startswith(_MULTIMODAL_KEY_PREFIXES)
    }
    if "torch_dtype" in llm_keys:
        llm_keys.setdefault("dtype", llm_keys.pop("torch_dtype"))
    if llm_keys.get("rope_scaling", 0) is None:  # transformers < 5 wrote null for "no scaling"; 5 deprecates the key
        del llm_keys["rope_scaling"]
    text_config = AutoConfig.for_model(checkpoint.family, **llm_keys)
    rows, width = checkpoint.shapes["model.embed_tokens.weight"]
    if width != text_config.hidden_size:
        raise ValueError(f"config.json hidden_size={text_config.hidden_size} but the embeddings are {width} wide")
    text_config.vocab_size = rows  # the weights are the truth (the release may have resized them)
    return text_config


def build_config(**kwargs) -> MiniGeminiConfig:
    """MiniGeminiConfig(**kwargs), with its validation errors raised as plain ValueErrors (one clear line)."""
    from huggingface_hub.errors import StrictDataclassError

    try:
        return MiniGeminiConfig(**kwargs)
    except StrictDataclassError as error:
        cause = error.__cause__ or error
        raise ValueError(str(cause)) from error


def release_config(checkpoint: ReleaseCheckpoint) -> MiniGeminiConfig:
    """The MiniGeminiConfig of a release checkpoint (image_token_id is set later, with the tokenizer)."""
    source = checkpoint.config
    clip_prefix = CLIP_PREFIX if checkpoint.keys(CLIP_PREFIX) else CLIP_PREFIX_FLAT
    vision_config = clip_config_from_shapes(checkpoint.shapes, clip_prefix, source.get("mm_vision_tower"))
    grid = int(source.get("image_grid", 1))
    tokens_per_side = vision_config.image_size // vision_config.patch_size
    # The release's default HR size is 8x8 cells of the stride-4 map per LR token (768 for CLIP-L/336).
    image_size_aux = int(source.get("image_size_aux", tokens_per_side * 8 * 4 * grid))
    aux_config = convnext_config_from_shapes(checkpoint.shapes, CONVNEXT_PREFIX, image_size_aux)
    widths = {"mm_hidden_size": vision_config.hidden_size, "mm_hidden_size_aux": sum(aux_config.hidden_sizes)}
    for key, expected in widths.items():
        if key in source and int(source[key]) != expected:
            raise ValueError(f"config.json says {key}={source[key]} but the tower weights give {expected}")
    select = source.get("mm_vision_select_feature", "patch")
    if select not in ("patch", "cls_patch"):
        raise ValueError(f"unsupported mm_vision_select_feature {select!r} (the release uses 'patch' or 'cls_patch')")
    query_shape = checkpoint.shapes.get("model.vlm_uni_query_projector.1.weight")
    text_config = _text_config(checkpoint)
    config = build_config(
        vision_config=vision_config,
        vision_aux_config=aux_config,
        text_config=text_config,
        image_size_aux=image_size_aux,
        image_grid=grid,
        image_global=bool(source.get("image_global", False)),
        vision_feature_layer=int(source.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy="default" if select == "patch" else "full",
        mining_hidden_size=query_shape[0] if query_shape else None,
        projector_type=_projector_type(checkpoint),
    )
    if text_config.dtype is not None:
        config.dtype = text_config.dtype
    return config


# ----------------------------------------------------------------------------------------------- tokenizer, template


def release_template_for(tokenizer: Any, text_config: Any) -> str:
    """The release's chat template for a checkpoint, judged by its tokenizer's special tokens, then its LLM.

    LLaMA-3 (`<|eot_id|>`) -> llama_3; Gemma (`<start_of_turn>`) -> gemma; Yi-34B (`<|im_start|>`, or a 64000-token
    LLaMA) -> chatml_direct; Mistral/Mixtral (`[INST]`, or the family) -> mistral_instruct; other LLaMA (Vicuna) ->
    vicuna_v1. Names and paths are never consulted.
    """
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    if "<|eot_id|>" in vocab or "<|start_header_id|>" in vocab:
        return "llama_3"
    if "<start_of_turn>" in vocab:
        return "gemma"
    if "<|im_start|>" in vocab:
        return "chatml_direct"
    if "[INST]" in vocab:
        return "mistral_instruct"
    model_type = getattr(text_config, "model_type", "")
    if model_type.startswith("gemma"):
        return "gemma"
    if model_type in ("mistral", "mixtral"):
        return "mistral_instruct"
    if getattr(text_config, "vocab_size", None) == 64000:
        return "chatml_direct"
    if getattr(text_config, "vocab_size", None) == 128256:
        return "llama_3"
    return "vicuna_v1"


def _load_tokenizer(directory: Path, text_config):
    try:
        # The LLM config is passed so the release's config.json (model_type "mgm...") is not read as a tokenizer hint.
        return AutoTokenizer.from_pretrained(directory, config=text_config)
    except Exception as error:  # tokenizer backends raise many types
        from transformers.utils import is_sentencepiece_available

        hint = ""
        sentencepiece_only = (directory / "tokenizer.model").is_file() and not (directory / "tokenizer.json").is_file()
        if sentencepiece_only and not is_sentencepiece_available():
            hint = " (its tokenizer.model is a SentencePiece model: `pip install sentencepiece` to read it)"
        raise ValueError(
            f"the tokenizer files in {directory} cannot be loaded{hint}: {type(error).__name__}: {error}"
        ) from error


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' warnings (load reports) where the caller checks and reports problems itself."""
    previous = tf_logging.get_verbosity()
    tf_logging.set_verbosity(tf_logging.ERROR)
    try:
        yield
    finally:
        tf_logging.set_verbosity(previous)


def check_loading_info(info: dict, checkpoint: ReleaseCheckpoint, config: MiniGeminiConfig) -> None:
    missing = sorted(k for k in info.get("missing_keys", ()) if not _UNUSED_OWN_KEYS.match(k))
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not _IGNORABLE_KEY.search(k))
    mismatched = [
        f"{key} (checkpoint {tuple(stored)}, model {tuple(wanted)})"
        for key, stored, wanted in sorted(info.get("mismatched_keys", ()))
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) the model needs are not in the checkpoint: {summarise(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint weight(s) fit nowhere in the model: {summarise(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} weight(s) have the wrong shape: {summarise(mismatched)}")
    if info.get("error_msgs"):
        problems.append("; ".join(map(str, info["error_msgs"])))
    if problems:
        raise ValueError(f"cannot convert {checkpoint.directory}: " + "; ".join(problems))


def summarise(keys: list, limit: int = 6) -> str:
    keys = [k if isinstance(k, str) else str(k) for k in keys]
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def release_processor(checkpoint: ReleaseCheckpoint, config: MiniGeminiConfig, chat_template: str | None = None):
    """The MiniGeminiProcessor of a release checkpoint, or None when the directory has no tokenizer.

    `chat_template` overrides the template chosen from the tokenizer and LLM family, as the release did per model.
    """
    if not checkpoint.has_tokenizer():
        return None
    tokenizer = _load_tokenizer(checkpoint.directory, config.text_config)
    if chat_template is None:
        chat_template = release_template_for(tokenizer, config.text_config)
    else:
        get_template(chat_template)  # unknown names raise, listing the known ones
    # image_aspect_ratio "pad" (all released models): pad to a square with the mean colour; else centre-crop.
    pad_to_square = checkpoint.config.get("image_aspect_ratio", "pad") == "pad"
    return build_processor(config, tokenizer, chat_template, pad_to_square=pad_to_square)
