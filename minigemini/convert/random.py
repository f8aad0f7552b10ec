"""A random, untrained Mini-Gemini of a preset size around a real tokenizer: ``mgm init --random tiny``.

For trying the pipeline offline (data checks, training, merging, evaluation, chat, serving) in seconds: the weights
are PyTorch's default initialisation, the shapes the tests' (a 32 px CLIP with 8 px patches, a 64 px ConvNeXt, a
2-layer Llama), the tokenizer and its chat template whatever the caller passes (`mgm init` passes SmolLM2's, which
ships with the package's demo extra).  Nothing it answers means anything before training.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from minigemini.convert.common import build_config
from minigemini.modeling import MiniGeminiForConditionalGeneration, add_image_token
from minigemini.processing import build_processor
from minigemini.saving import check_new_directory, save_model_and_processor

__all__ = ["RANDOM_PRESETS", "random_model"]

#: preset -> (vision, ConvNeXt, LLM settings, HR image size)
RANDOM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vision_config": {
            "model_type": "clip_vision_model",
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        "vision_aux_config": {"model_type": "convnext", "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
        "text_config": {
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
        },
        "image_size_aux": 64,
        "tie_word_embeddings": True,
    },
}


def random_model(preset: str, tokenizer, out: str | os.PathLike | None = None, seed: int = 0):
    """A random Mini-Gemini of ``preset`` (``RANDOM_PRESETS``) for ``tokenizer`` (its vocabulary, special tokens and
    chat template), saved to ``out`` when given; returns (model, processor)."""
    if preset not in RANDOM_PRESETS:
        raise ValueError(f"unknown random preset {preset!r}; choose from {', '.join(RANDOM_PRESETS)}")
    if out is not None:
        out = check_new_directory(out)
    settings = RANDOM_PRESETS[preset]
    text = {
        **settings["text_config"],
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": settings["tie_word_embeddings"],
    }
    config = build_config(**{**settings, "text_config": text}, projector_type="mlp2x_gelu")
    torch.manual_seed(seed)
    model = MiniGeminiForConditionalGeneration(config).eval()
    processor = build_processor(config, tokenizer, None)
    add_image_token(model, processor)
    if out is not None:
        save_model_and_processor(model, processor, out)
    return model, processor
