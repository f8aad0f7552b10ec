"""`mgm init`: a fresh, untrained Mini-Gemini assembled from standard parts.

Parts: a CLIP or SigLIP vision model directory (transformers format; a full CLIP/SigLIP checkpoint is fine, its text
half is ignored), a ConvNeXt given as a transformers directory or as the LAION open_clip file the release used
(`open_clip_pytorch_model.bin`, timm naming under `visual.trunk.*`; its config is read from the weight shapes), and
any causal LM directory with its tokenizer. The mining layers and the projector start from PyTorch's default
initialisation, as in the release's stage 1; `<image>` is added to the tokenizer and the embeddings.

The parts are loaded once and placed into a model built on the meta device, so a 7B LLM is never held twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, ConvNextModel

from minigemini.configuration import MiniGeminiConfig
from minigemini.convert.common import build_config, convnext_config_from_shapes, quiet_transformers
from minigemini.convert.release import CONVNEXT_PREFIX, release_template_for, rename_release_key
from minigemini.mining import PatchInfoMining
from minigemini.modeling import MiniGeminiForConditionalGeneration, add_image_token, build_projector
from minigemini.precision import parse_dtype
from minigemini.processing import build_processor
from minigemini.saving import check_new_directory, save_model_and_processor
from minigemini.templates import get_template

__all__ = ["init_model", "load_convnext", "load_open_clip_convnext", "load_vision_tower"]

OPEN_CLIP_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")
_OPEN_CLIP_TRUNK = "visual.trunk."
#: The release's HR map gives each LR token a window of 8 x 8 cells (768 px for CLIP-L/336).
CELLS_PER_TOKEN_SIDE = 8


def _read_model_type(directory: Path, flag: str) -> str:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{flag} {directory}: no config.json there; expected a transformers model directory")
    try:
        return str(json.loads(config_path.read_text(encoding="utf-8")).get("model_type", ""))
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} {directory}: config.json is not valid JSON ({error})") from error


def _vision_classes() -> dict[str, type]:
    from transformers import CLIPVisionModel, SiglipVisionModel

    return {
        "clip": CLIPVisionModel,
        "clip_vision_model": CLIPVisionModel,
        "siglip": SiglipVisionModel,
        "siglip_vision_model": SiglipVisionModel,
    }


def load_vision_tower(path: str | os.PathLike, dtype: torch.dtype | str | None = None):
    """The LR encoder: a CLIP or SigLIP vision model from a transformers directory (full or vision-only)."""
    directory = Path(path).expanduser()
    model_type = _read_model_type(directory, "--vision")
    classes = _vision_classes()
    if model_type not in classes:
        raise ValueError(
            f"--vision {directory} holds a {model_type!r} model; expected CLIP or SigLIP ({', '.join(classes)})"
        )
    with quiet_transformers():  # a full CLIP's text half is reported as unused; it is
        model, info = classes[model_type].from_pretrained(directory, dtype=dtype, output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"--vision {directory} lacks vision weights: {sorted(info['missing_keys'])[:6]}")
    return model


def load_open_clip_convnext(path: str | os.PathLike, image_size: int = 768) -> ConvNextModel:
    """A transformers ConvNextModel from an open_clip ConvNeXt checkpoint (timm names under `visual.trunk.*`).

    Only the stem and stages are used (open_clip's head, the final norm and the text tower are ignored). The config
    (widths, depths, patch size, layer scale) is read from the tensor shapes.
    """
    path = Path(path).expanduser()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"--vision-aux {path} is not a readable checkpoint: {type(error).__name__}: {error}"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    # open_clip checkpoints saved from DDP carry a `module.` prefix
    state = {key.removeprefix("module."): value for key, value in state.items()}
    trunk = {
        f"{CONVNEXT_PREFIX}vision_{key[len(_OPEN_CLIP_TRUNK) :]}": value
        for key, value in state.items()
        if key.startswith((_OPEN_CLIP_TRUNK + "stem.", _OPEN_CLIP_TRUNK + "stages."))
    }
    if not trunk:
        raise ValueError(
            f"--vision-aux {path} has no visual.trunk.stem.* / visual.trunk.stages.* tensors; expected an open_clip "
            f"ConvNeXt checkpoint (e.g. convnext_large_d_320's open_clip_pytorch_model.bin)"
        )
    config = convnext_config_from_shapes({k: tuple(v.shape) for k, v in trunk.items()}, CONVNEXT_PREFIX, image_size)
    renamed = {rename_release_key(k).removeprefix(f"{CONVNEXT_PREFIX}convnext."): v for k, v in trunk.items()}
    model = ConvNextModel(config)
    result = model.load_state_dict(renamed, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("layernorm.")]  # the unused pooled-head norm
    if missing or result.unexpected_keys:
        raise ValueError(
            f"--vision-aux {path}: the ConvNeXt weights do not fit a standard ConvNeXt "
            f"(missing {missing[:6]}, unexpected {result.unexpected_keys[:6]})"
        )
    return model


def load_convnext(path: str | os.PathLike, image_size: int = 768, dtype: torch.dtype | None = None) -> ConvNextModel:
    """The HR encoder: a transformers ConvNeXt directory, an open_clip file, or a directory holding one."""
    path = Path(path).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        for name in OPEN_CLIP_FILES:
            if (path / name).is_file():
                path = path / name
                break
    if path.is_file():
        model = load_open_clip_convnext(path, image_size)
        return model.to(dtype) if dtype is not None else model
    if not path.exists():
        raise FileNotFoundError(f"--vision-aux {path}: no such file or directory")
    model_type = _read_model_type(path, "--vision-aux")
    if model_type != "convnext":
        raise ValueError(f"--vision-aux {path} holds a {model_type!r} model; expected a ConvNeXt (model_type convnext)")
    with quiet_transformers():
        model, info = ConvNextModel.from_pretrained(path, dtype=dtype, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith("layernorm.")]
    if missing:
        raise ValueError(f"--vision-aux {path} lacks ConvNeXt weights: {sorted(missing)[:6]}")
    model.config.image_size = image_size
    return model


def _image_statistics(vision_dir: Path) -> dict[str, Any]:
    """image_mean / image_std of the vision model's own preprocessor, when it has one (SigLIP uses 0.5 / 0.5)."""
    path = vision_dir / "preprocessor_config.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {key: data[key] for key in ("image_mean", "image_std") if key in data}


def _resolve_dtype(dtype: str | torch.dtype | None, llm_dir: Path) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        stored = json.loads((llm_dir / "config.json").read_text(encoding="utf-8"))
        stored = stored.get("dtype") or stored.get("torch_dtype") or "float32"
        try:
            return parse_dtype(stored) or torch.float32
        except ValueError:
            return torch.float32
    return parse_dtype(dtype)


def _load_llm(llm_dir: Path, config: MiniGeminiConfig, dtype: torch.dtype):
    """(tokenizer, causal LM) of `--llm`, every weight the config needs present."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    except Exception as error:
        raise ValueError(f"--llm {llm_dir}: cannot load its tokenizer ({type(error).__name__}: {error})") from error
    with quiet_transformers():
        language_model, info = AutoModelForCausalLM.from_pretrained(
            llm_dir, config=config.text_config, dtype=dtype, output_loading_info=True
        )
    missing = set(info["missing_keys"]) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    if missing:
        raise ValueError(f"--llm {llm_dir} lacks weights: {sorted(missing)[:6]}")
    return tokenizer, language_model


def _assemble(config: MiniGeminiConfig, vision_model, convnext, language_model, dtype: torch.dtype):
    """The model, in eval mode, with the loaded parts placed into a shell built on the meta device (nothing is
    allocated twice), and new mining layers and projector."""
    with torch.device("meta"):
        model = MiniGeminiForConditionalGeneration(config)
    model.model.vision_tower.model = vision_model
    model.model.vision_tower_aux.convnext = convnext
    model.model.language_model = language_model.base_model
    model.lm_head = language_model.get_output_embeddings()
    # New layers with PyTorch's default init, as the release's stage 1 started from.
    model.model.mining = PatchInfoMining(
        config.vision_config.hidden_size, config.vision_aux_hidden_size, config.mining_hidden_size
    ).to(dtype)
    model.model.mm_projector = build_projector(config).to(dtype)
    model.generation_config = language_model.generation_config  # the LLM's eos / pad / sampling defaults
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left_on_meta:  # a part whose structure differs from what the config builds
        raise RuntimeError(f"internal error: weights not filled in: {left_on_meta[:6]}")
    return model.eval()


def init_model(
    vision: str | os.PathLike,
    vision_aux: str | os.PathLike,
    llm: str | os.PathLike,
    out: str | os.PathLike | None = None,
    image_size_aux: int | None = None,
    hd: bool = False,
    chat_template: str | None = None,
    dtype: str | torch.dtype | None = "auto",
):
    """Assemble (and save to `out`, atomically) an untrained Mini-Gemini; returns (model, processor).

    image_size_aux defaults to the release's ratio (8 x 8 HR cells per LR token: 768 for CLIP-L/336, doubled in HD).
    chat_template defaults to the LLM tokenizer's own jinja template when it has one, else the release template
    its special tokens suggest.
    """
    if out is not None:
        out = check_new_directory(out)  # before loading anything
    if chat_template is not None:
        get_template(chat_template)
    llm_dir = Path(llm).expanduser()
    if _read_model_type(llm_dir, "--llm") == MiniGeminiConfig.model_type:
        raise ValueError(f"--llm {llm_dir} is already a Mini-Gemini model; pass the plain language model")
    dtype = _resolve_dtype(dtype, llm_dir)
    vision_dir = Path(vision).expanduser()
    vision_model = load_vision_tower(vision_dir, dtype)
    convnext = load_convnext(vision_aux, dtype=dtype)
    grid = 2 if hd else 1
    if image_size_aux is None:
        tokens_per_side = vision_model.config.image_size // vision_model.config.patch_size
        # the fused ConvNeXt map has the stem's stride (4)
        image_size_aux = tokens_per_side * CELLS_PER_TOKEN_SIDE * convnext.config.patch_size * grid
    convnext.config.image_size = image_size_aux
    # The config (and its checks) before the LLM weights, the one large part.
    config = build_config(
        vision_config=vision_model.config,
        vision_aux_config=convnext.config,
        text_config=AutoConfig.from_pretrained(llm_dir),
        image_size_aux=image_size_aux,
        image_grid=grid,
        image_global=hd,
        vision_feature_select_strategy="full" if vision_model.config.model_type.startswith("siglip") else "default",
        projector_type="mlp2x_gelu",
    )
    config.dtype = dtype
    tokenizer, language_model = _load_llm(llm_dir, config, dtype)
    model = _assemble(config, vision_model, convnext, language_model, dtype)
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        chat_template = release_template_for(tokenizer, language_model.config)
    processor = build_processor(config, tokenizer, chat_template, **_image_statistics(vision_dir))
    add_image_token(model, processor)
    if out is not None:
        save_model_and_processor(model, processor, out)
    return model, processor
