"""Text-to-image backends: the synthetic-world renderer (parsed and checked pixel by pixel) and diffusers (a tiny
SDXL pipeline built here from configs, with an in-memory CLIP tokenizer)."""

import numpy as np
import pytest
import torch

from minigemini import text_to_image
from minigemini.generation import NEGATIVE_PROMPT
from minigemini.synthetic import COLOURS, ShapeSpec, draw_scene, parse_description, render
from minigemini.text_to_image import DiffusersTextToImage, SyntheticTextToImage, load_text_to_image


def pixel(image, xy):
    return image.getpixel((int(xy[0]), int(xy[1])))


# ------------------------------------------------------------------------------------------- parser


def test_parse_shapes_counts_sizes_positions_background_words():
    spec = parse_description(
        "Three small blue stars at the top, a big red circle in the bottom-left corner and 2 squares "
        'on a yellow background with the words "HELLO" and “MGM”'
    )
    assert spec.background == "yellow"
    assert spec.words == ("HELLO", "MGM")
    assert spec.shapes == (
        ShapeSpec("star", 3, "blue", 0.55, "top"),
        ShapeSpec("circle", 1, "red", 1.0, "bottom left"),
        ShapeSpec("square", 2, None, 0.8, None),
    )


def test_parse_ignores_other_words_and_caps_counts():
    assert parse_description("a photo of a dog").shapes == ()
    assert parse_description("bright light on the right").shapes == ()
    spec = parse_description("99 green triangles")
    assert spec.shapes[0].count == 12 and spec.background == "white"


# ------------------------------------------------------------------------------------------- renderer


def test_renderer_draws_what_the_description_says():
    scene = draw_scene("a red circle on the left and a green square on the right on a blue background", size=240)
    image = scene.image
    assert image.size == (240, 240)
    assert pixel(image, (40, 120)) == COLOURS["red"]  # centre of the left cell
    assert pixel(image, (200, 120)) == COLOURS["green"]  # centre of the right cell
    for corner in [(2, 2), (237, 2), (2, 237), (237, 237), (120, 120)]:
        assert pixel(image, corner) == COLOURS["blue"]
    assert [(s.kind, s.colour) for s in scene.shapes] == [("circle", "red"), ("square", "green")]


def test_renderer_counts_and_shapes():
    scene = draw_scene("four yellow triangles and two purple stars at the bottom", size=300, seed=3)
    triangles = [s for s in scene.shapes if s.kind == "triangle"]
    stars = [s for s in scene.shapes if s.kind == "star"]
    assert len(triangles) == 4 and len(stars) == 2
    for shape in scene.shapes:
        assert pixel(scene.image, shape.center) == COLOURS[shape.colour]
    assert all(s.center[1] > 200 for s in stars)  # the bottom row of the 3x3 grid
    assert len({(round(s.center[0]), round(s.center[1])) for s in scene.shapes}) == 6
    # a star's tips are coloured but the space between two tips is background
    star = stars[0]
    assert pixel(scene.image, (star.center[0], star.center[1] - 0.9 * star.radius)) == COLOURS["purple"]
    assert (
        pixel(scene.image, (star.center[0] + 0.8 * star.radius, star.center[1] - 0.6 * star.radius)) == COLOURS["white"]
    )


def test_renderer_is_deterministic_with_a_seed():
    description = 'two circles and a triangle with the word "hi"'
    a = np.asarray(render(description, size=128, seed=7))
    b = np.asarray(render(description, size=128, seed=7))
    c = np.asarray(render(description, size=128, seed=8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # the seed moves shapes and picks the missing colours


def test_renderer_writes_quoted_words_in_a_bottom_band():
    scene = draw_scene('a red square "OK"', size=(200, 160))
    x0, y0, x1, y1 = scene.text_box
    assert y0 >= 0.78 * 160 - 1 and y1 <= 160 and x0 >= 0 and x1 <= 200
    band = np.asarray(scene.image)[int(0.8 * 160) :, :, :]
    assert (band.sum(-1) < 100).any()  # black text on the white background
    assert scene.shapes[0].center[1] < 0.78 * 160


def test_synthetic_backend_interface():
    backend = load_text_to_image("synthetic")
    assert isinstance(backend, SyntheticTextToImage)
    image = backend("a red circle", width=96, height=64, seed=1)
    assert image.size == (96, 64) and pixel(image, (48, 32)) == COLOURS["red"]
    with pytest.raises(ValueError, match="prompt is empty"):
        backend("   ")
    with pytest.raises(ValueError, match="width"):
        backend("a circle", width=5)


def test_auto_uses_sdxl_only_when_it_is_cached(monkeypatch):
    calls = []
    monkeypatch.setattr(text_to_image, "sdxl_is_cached", lambda: False)
    assert isinstance(load_text_to_image("auto"), SyntheticTextToImage)
    monkeypatch.setattr(text_to_image, "sdxl_is_cached", lambda: True)
    monkeypatch.setattr(
        DiffusersTextToImage, "from_pretrained", classmethod(lambda cls, *a, **k: calls.append((a, k)) or "sdxl")
    )
    assert load_text_to_image("auto") == "sdxl"
    assert calls[0][0][0] == text_to_image.SDXL_MODEL_ID and calls[0][1]["local_files_only"] is True
    load_text_to_image("sdxl")
    assert calls[1][0][0] == text_to_image.SDXL_MODEL_ID and "local_files_only" not in calls[1][1]


# ------------------------------------------------------------------------------------------- diffusers


def tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    merges = [("r", "e"), ("re", "d</w>"), ("c", "i"), ("ci", "r"), ("cir", "c"), ("circ", "l"), ("circl", "e</w>")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    assert tokenizer.tokenize("red circle") == ["red</w>", "circle</w>"]
    return tokenizer


def tiny_sdxl(tmp_path):
    """diffusers' SDXL test geometry, smaller: UNet sample 16, VAE x2 -> 32x32 pictures by default."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + the 32-wide pooled text embedding
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        sample_size=32,
    )
    text_config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        projection_dim=32,
        max_position_embeddings=16,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    pipeline = StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
    )
    pipeline.save_pretrained(tmp_path)
    return tmp_path


def test_diffusers_backend_with_a_tiny_sdxl(tmp_path):
    path = tiny_sdxl(tmp_path / "sdxl")
    backend = load_text_to_image(str(path), device="cpu", num_inference_steps=2)
    assert isinstance(backend, DiffusersTextToImage)
    assert type(backend.pipeline).__name__ == "StableDiffusionXLPipeline"
    assert backend.pipeline.device.type == "cpu" and backend.pipeline.unet.dtype == torch.float32

    seen = []
    original = backend.pipeline.__class__.__call__

    def spy(pipeline, **kwargs):
        seen.append(kwargs)
        return original(pipeline, **kwargs)

    backend.pipeline.__class__.__call__ = spy
    try:
        first = backend("a red circle", seed=0)
        wide = backend("a red circle", seed=0, width=48, height=40)
    finally:
        backend.pipeline.__class__.__call__ = original
    assert first.size == (32, 32) and first.mode == "RGB"
    assert wide.size == (48, 40)
    assert np.asarray(first).std() > 0  # a real (if random) picture, not a blank
    assert seen[0]["negative_prompt"] == NEGATIVE_PROMPT  # the release's negative prompt
    assert seen[0]["num_inference_steps"] == 2 and seen[0]["prompt"] == "a red circle"
