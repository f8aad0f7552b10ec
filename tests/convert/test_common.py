"""What release conversion and `mgm init` share: tower configs read from weight shapes, one-line config errors."""

import pytest
from transformers import CLIPVisionConfig, CLIPVisionModel

from minigemini.convert.common import build_config, clip_config_from_shapes, summarise

CLIP = {"hidden_size": 128, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 2}


def test_clip_config_comes_from_the_weight_shapes():
    model = CLIPVisionModel(CLIPVisionConfig(**CLIP, image_size=32, patch_size=8))
    shapes = {f"tower.{key}": tuple(value.shape) for key, value in model.state_dict().items()}
    config = clip_config_from_shapes(shapes, "tower.", tower=None)
    derived = (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.image_size)
    assert derived == (128, 96, 3, 32) and config.patch_size == 8
    assert config.num_attention_heads == 128 // 64  # OpenAI CLIP's 64-wide heads: not in any shape
    with pytest.raises(ValueError, match="the CLIP tower lacks"):
        clip_config_from_shapes(shapes, "elsewhere.", tower=None)


def test_build_config_errors_are_one_line():
    with pytest.raises(ValueError) as error:
        build_config(projector_type="nonsense")
    assert "\n" not in str(error.value) and "nonsense" in str(error.value)


def test_summarise_shortens_long_lists():
    assert summarise(["a", "b"]) == "a, b"
    assert summarise([str(i) for i in range(9)], limit=3) == "0, 1, 2, ... (9 in all)"
