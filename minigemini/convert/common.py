"""What converting a release and assembling a model from parts share: tower configs read from weight shapes, a
MiniGeminiConfig with one-line errors, quiet transformers load reports, short key lists."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPVisionConfig, ConvNextConfig
from transformers.utils import logging as tf_logging

from minigemini.configuration import MiniGeminiConfig

__all__ = [
    "build_config",
    "clip_config_from_shapes",
    "convnext_config_from_shapes",
    "indices",
    "quiet_transformers",
    "summarise",
]


def indices(keys: Iterable[str], pattern: str) -> list[int]:
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
    layers = len(indices(shapes, re.escape(prefix) + r"encoder\.layers\.(\d+)\."))
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
    shapes: dict[str, tuple[int, ...]], prefix: str, image_size: int = 768
) -> ConvNextConfig:
    """ConvNextConfig from timm-named tensor shapes under `prefix` (`vision_stem.*` / `vision_stages.*`)."""
    try:
        width, channels, patch, _ = shapes[prefix + "vision_stem.0.weight"]
    except KeyError as error:
        raise ValueError(f"the ConvNeXt tower lacks {error.args[0]}") from error
    stages = indices(shapes, re.escape(prefix) + r"vision_stages\.(\d+)\.")
    if stages != list(range(len(stages))) or not stages:
        raise ValueError(f"the ConvNeXt tower's stages are not numbered 0..n-1: {stages}")
    hidden_sizes, depths = [], []
    for stage in stages:
        blocks = indices(shapes, re.escape(prefix) + rf"vision_stages\.{stage}\.blocks\.(\d+)\.")
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


def build_config(**kwargs) -> MiniGeminiConfig:
    """MiniGeminiConfig(**kwargs), with its validation errors raised as plain ValueErrors (one clear line)."""
    from huggingface_hub.errors import StrictDataclassError

    try:
        return MiniGeminiConfig(**kwargs)
    except StrictDataclassError as error:
        cause = error.__cause__ or error
        raise ValueError(str(cause)) from error


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' warnings (load reports) where the caller checks and reports problems itself."""
    previous = tf_logging.get_verbosity()
    tf_logging.set_verbosity(tf_logging.ERROR)
    try:
        yield
    finally:
        tf_logging.set_verbosity(previous)


def summarise(keys: list, limit: int = 6) -> str:
    keys = [k if isinstance(k, str) else str(k) for k in keys]
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
