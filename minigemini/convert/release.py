"""The published Mini-Gemini (MGM) release checkpoints, read into this package's model: `mgm convert`, and what
`MiniGeminiForConditionalGeneration.from_pretrained` runs to convert a release directory on load.

A release directory (e.g. `YanweiLi/MGM-7B`) holds one LLaMA/Gemma/Mistral/Mixtral causal LM whose `config.json` carries
extra `mm_*` / `image_*` keys, and whose weights also hold the two vision towers, the mining layers and the projector
under the release's own names. It is recognised by those config and weight keys, never by its path.

How it loads: the release config is translated into a `MiniGeminiConfig` (tower configs derived from the weight
*shapes*, read from the file headers, because `mm_vision_tower` names a local path or hub id that usually cannot be
fetched), and the weights are read straight from the release shards by `transformers`' own loader with the model's
`key_mapping` (`modeling.RELEASE_KEY_MAPPING`). The loader then also applies transformers' conversions of legacy LLM
weights (e.g. Mixtral's per-expert `w1/w2/w3`, fused in transformers 5). Keys that match nothing known, and weights the
model needs but the checkpoint lacks, are errors.

The release marks images with IMAGE_TOKEN_INDEX = -200, which is not a token; here `<image>` is added to the
tokenizer, the embeddings grow by one row if needed, and `config.image_token_id` is set. The chat template is chosen
from the tokenizer's special tokens and the LLM family, as the release did per model (overridable).

Importing this module registers `RELEASE_CONVERSION` with the model (`minigemini` imports it through `loading`): the
core cannot import this module, so `from_pretrained` reaches it through that hook. Also `load_stage1_projector`, for a
release stage-1 `mm_projector.bin`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer

from minigemini.configuration import MiniGeminiConfig
from minigemini.convert.common import (
    build_config,
    clip_config_from_shapes,
    convnext_config_from_shapes,
    indices,
    quiet_transformers,
    summarise,
)
from minigemini.convert.files import index_map, read_json, resolve_checkpoint_dir, tensor_shapes, weight_files
from minigemini.modeling import (
    RELEASE_KEY_MAPPING,
    MiniGeminiForConditionalGeneration,
    ReleaseConversion,
    add_image_token,
)
from minigemini.precision import parse_dtype
from minigemini.processing import build_processor
from minigemini.saving import check_new_directory, save_model_and_processor
from minigemini.templates import get_template

__all__ = [
    "RELEASE_CONVERSION",
    "ReleaseCheckpoint",
    "check_loading_info",
    "component_of",
    "convert_and_save",
    "convert_release_checkpoint",
    "is_release_checkpoint",
    "load_release_checkpoint",
    "load_stage1_projector",
    "read_release_checkpoint",
    "release_config",
    "release_processor",
    "release_template_for",
    "rename_release_key",
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

_COMPILED_MAPPING = [(re.compile(pattern), replacement) for pattern, replacement in RELEASE_KEY_MAPPING.items()]

#: Weights of this package's model that a release does not have and does not need.
_UNUSED_OWN_KEYS = re.compile(r"^model\.vision_tower_aux\.convnext\.layernorm\.(weight|bias)$")  # pooled head norm

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


def read_release_checkpoint(source: str | os.PathLike) -> ReleaseCheckpoint:
    """Read and check a release directory's config and weight layout; raise a clear error for anything else.

    Only file headers are read (safetensors) or .bin files memory-mapped onto the meta device, so this is cheap even
    for a 34B model: every problem with the files surfaces here, before anything is built or written.
    """
    directory = resolve_checkpoint_dir(source)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json; it is not a model checkpoint")
    config = read_json(config_path, "model config")
    if config.get("model_type") == MiniGeminiConfig.model_type:
        raise ValueError(f"{directory} is already in this package's format; load it with from_pretrained")

    files = weight_files(directory)
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, Path] = {}
    for path in files:
        for key, shape in tensor_shapes(path).items():
            shapes[key] = shape
            where[key] = path
    index = index_map(directory)
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
        except Exception:  # noqa: BLE001 (offline, unknown, gated...: not a release we can read)
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


def _projector_type(checkpoint: ReleaseCheckpoint) -> str:
    layers = indices(checkpoint.shapes, r"model\.mm_projector\.(\d+)\.weight$")
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


# ------------------------------------------------------------------------------------------------ load, convert


def load_release_checkpoint(source: str | os.PathLike, chat_template: str | None = None, **from_pretrained_kwargs):
    """A release checkpoint as (MiniGeminiForConditionalGeneration, MiniGeminiProcessor or None).

    `chat_template` overrides the detected template; `from_pretrained_kwargs` (dtype, device_map, ...) go to
    transformers' loader. The processor is None when the directory has no tokenizer; the model then gets
    `<image>` as a new last row, which a tokenizer must map to `config.image_token_id`.
    """
    return _load(MiniGeminiForConditionalGeneration, source, chat_template, **from_pretrained_kwargs)


def _load(model_class, source, chat_template: str | None = None, **from_pretrained_kwargs):
    """`load_release_checkpoint` into `model_class` (what `from_pretrained` runs through `RELEASE_CONVERSION`)."""
    for key in ("config", "key_mapping", "output_loading_info", "ignore_mismatched_sizes"):
        if key in from_pretrained_kwargs:
            raise TypeError(f"{key}= cannot be given when loading a release checkpoint (it is derived from it)")
    checkpoint = read_release_checkpoint(source)
    config = release_config(checkpoint)
    processor = release_processor(checkpoint, config, chat_template)
    # transformers' load report is replaced by the stricter check below, which raises on anything that matters.
    with quiet_transformers():
        model, info = model_class.from_release_weights(checkpoint.directory, config, **from_pretrained_kwargs)
    check_loading_info(info, checkpoint, config)
    add_image_token(model, processor)
    return model, processor


def convert_release_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike | None = None,
    chat_template: str | None = None,
    dtype: str | torch.dtype | None = "auto",
):
    """Convert a published MGM checkpoint; save it (model + processor) to `destination` when given.

    `dtype="auto"` keeps the checkpoint's stored dtype. Returns the MiniGeminiForConditionalGeneration (use
    `load_release_checkpoint` to get the processor too).
    """
    return convert_and_save(source, destination, chat_template, dtype)[0]


def convert_and_save(source, destination, chat_template=None, dtype="auto", with_code: bool = False):
    """`convert_release_checkpoint` returning (model, processor): what `mgm convert` runs.  `with_code`: the
    checkpoint also carries the code that loads it without this package (`saving.save_model_and_processor`)."""
    if destination is not None:
        destination = check_new_directory(destination)  # before the (long) load
    dtype = "auto" if dtype is None or dtype == "auto" else parse_dtype(dtype)
    model, processor = load_release_checkpoint(source, chat_template=chat_template, dtype=dtype)
    if destination is not None:
        save_model_and_processor(model, processor, destination, with_code=with_code)
    return model, processor


def load_stage1_projector(model, path: str | os.PathLike) -> list[str]:
    """Load a release stage-1 `mm_projector.bin` (projector + mining weights) onto an existing model.

    Every tensor in the file must land on a parameter of the same shape; returns the names loaded (ours).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable torch file: {type(error).__name__}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    allowed = {"the projector", "the patch info mining layers"}
    unknown = [k for k in state if component_of(k) not in allowed]
    if unknown:
        raise ValueError(f"{path} holds weights that are not projector or mining weights: {summarise(unknown)}")
    renamed = {rename_release_key(k): v for k, v in state.items()}
    own = model.state_dict()
    wrong = []
    for key, value in renamed.items():
        if key not in own:
            wrong.append(f"{key} (no such weight)")
        elif own[key].shape != value.shape:
            wrong.append(f"{key} {tuple(value.shape)} vs the model's {tuple(own[key].shape)}")
    if wrong:
        raise ValueError(f"{path} does not fit this model: {summarise(wrong)}")
    model.load_state_dict(renamed, strict=False)
    return sorted(renamed)


RELEASE_CONVERSION = ReleaseConversion(recognises=is_release_checkpoint, load=_load)
MiniGeminiForConditionalGeneration.release_conversion = RELEASE_CONVERSION
