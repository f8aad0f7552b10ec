"""`mgm init`: a new Mini-Gemini from tiny local parts (CLIP/SigLIP dir, ConvNeXt dir or open_clip file, LLM dir)."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoProcessor,
    CLIPConfig,
    CLIPModel,
    ConvNextConfig,
    ConvNextModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from minigemini import MiniGeminiForConditionalGeneration
from minigemini.cli import init as init_module
from minigemini.convert.from_parts import init_model, load_open_clip_convnext
from minigemini.processing import MiniGeminiProcessor
from tests.helpers.tiny_release import (
    convnext_timm_tensors,
    make_tokenizer,
    reference_convnext,
    text_config_dict,
)

VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    clip = CLIPModel(
        CLIPConfig(
            vision_config=VISION,
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "vocab_size": 50,
                "bos_token_id": 0,
                "eos_token_id": 1,
                "pad_token_id": 1,
            },
        )
    )
    clip.save_pretrained(root / "clip")
    siglip = SiglipVisionModel(SiglipVisionConfig(**VISION))
    siglip.save_pretrained(root / "siglip")
    statistics = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (root / "siglip" / "preprocessor_config.json").write_text(json.dumps(statistics))
    convnext = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1]))
    convnext.save_pretrained(root / "convnext")
    open_clip = convnext_timm_tensors(torch.Generator().manual_seed(1), "visual.trunk.")
    open_clip.update(
        {  # parts of an open_clip checkpoint that the HR encoder does not use
            "visual.trunk.head.norm.weight": torch.ones(32),
            "visual.head.mlp.fc1.weight": torch.zeros(4, 32),
            "text.token_embedding.weight": torch.zeros(10, 8),
            "logit_scale": torch.tensor(1.0),
        }
    )
    (root / "openclip").mkdir()
    torch.save(open_clip, root / "openclip" / "open_clip_pytorch_model.bin")
    tokenizer = make_tokenizer("vicuna")
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **text_config_dict("llama", len(tokenizer))))
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return {
        "root": root,
        "clip": clip,
        "convnext": convnext,
        "open_clip": open_clip,
        "llm": llm,
        "tokenizer": tokenizer,
    }


def _image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8))


def test_init_from_transformers_directories_loads_and_generates(parts, tmp_path):
    root, out = parts["root"], tmp_path / "mgm"
    init_model(root / "clip", root / "convnext", root / "llm", out)
    model = MiniGeminiForConditionalGeneration.from_pretrained(out).eval()
    processor = MiniGeminiProcessor.from_pretrained(out)
    assert type(AutoProcessor.from_pretrained(out)) is MiniGeminiProcessor  # an `mgm init` checkpoint
    config = model.config
    assert config.image_size_aux == 128  # 4 LR tokens per side x 8 cells x stride 4, as the release's 24 -> 768
    assert config.image_token_id == processor.image_token_id == len(parts["tokenizer"])
    assert processor.template_name == "vicuna_v1"
    state = model.state_dict()
    for key, value in parts["clip"].vision_model.state_dict().items():
        assert torch.equal(state[f"model.vision_tower.model.{key}"], value), key
    for key, value in parts["convnext"].state_dict().items():
        assert torch.equal(state[f"model.vision_tower_aux.convnext.{key}"], value), key
    vocab = parts["llm"].config.vocab_size
    for key, value in parts["llm"].model.state_dict().items():
        assert torch.equal(state[f"model.language_model.{key}"][: len(value)], value), key
    assert torch.equal(state["lm_head.weight"][:vocab], parts["llm"].lm_head.weight)

    inputs = processor("USER: <image>\ndescribe it ASSISTANT:", images=[_image()])
    out_ids = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out_ids.shape == (1, inputs["input_ids"].shape[1] + 5)
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("as_directory", [False, True])
def test_open_clip_convnext_gives_the_reference_hr_map(parts, tmp_path, as_directory):
    root = parts["root"]
    source = root / "openclip" if as_directory else root / "openclip" / "open_clip_pytorch_model.bin"
    model, _ = init_model(root / "clip", source, root / "llm", tmp_path / "mgm", image_size_aux=64)
    assert model.config.vision_aux_config.hidden_sizes == [8, 16, 24, 32]
    assert model.config.vision_aux_config.depths == [1, 1, 2, 1]
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model.model.vision_tower_aux(images)
        expected = reference_convnext(parts["open_clip"], images, prefix="visual.trunk.")
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_siglip_hd_model(parts, tmp_path):
    root = parts["root"]
    model, processor = init_model(
        root / "siglip", root / "convnext", root / "llm", tmp_path / "mgm", hd=True, chat_template="plain"
    )
    config = model.config
    assert config.vision_feature_select_strategy == "full"  # SigLIP has no CLS token to drop
    assert (config.image_grid, config.image_global, config.image_size_aux) == (2, True, 256)
    assert processor.image_processor.image_mean == [0.5] * 3
    assert processor.template_name == "plain"
    inputs = processor("<image>", images=[_image(1)])
    assert inputs["pixel_values"].shape == (1, 5, 3, 32, 32)
    with torch.no_grad():
        assert int((inputs["input_ids"] == config.image_token_id).sum()) == 5 * 16
        assert torch.isfinite(model(**inputs).logits).all()


def test_command_line_init(parts, tmp_path, capsys):
    root = parts["root"]
    parser = argparse.ArgumentParser(prog="mgm")
    init_module.add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "mgm"
    args = parser.parse_args(
        [
            "init",
            "--vision",
            str(root / "clip"),
            "--vision-aux",
            str(root / "openclip" / "open_clip_pytorch_model.bin"),
            "--llm",
            str(root / "llm"),
            "--out",
            str(out),
            "--image-size-aux",
            "64",
            "--dtype",
            "bfloat16",
        ]
    )
    assert args.func(args) == 0
    assert "16 visual tokens per image" in capsys.readouterr().out
    model = MiniGeminiForConditionalGeneration.from_pretrained(out, dtype="auto")
    assert model.dtype == torch.bfloat16 and model.config.image_size_aux == 64


def _no_output(tmp_path: Path) -> bool:
    return not (tmp_path / "mgm").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_bad_parts_fail_clearly(parts, tmp_path):
    root = parts["root"]
    with pytest.raises(ValueError, match="holds a 'llama' model; expected CLIP or SigLIP"):
        init_model(root / "llm", root / "convnext", root / "llm", tmp_path / "mgm")
    with pytest.raises(ValueError, match="holds a 'clip' model; expected a ConvNeXt"):
        init_model(root / "clip", root / "clip", root / "llm", tmp_path / "mgm")
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "vit.bin")
    with pytest.raises(ValueError, match="no visual.trunk.stem"):
        init_model(root / "clip", tmp_path / "vit.bin", root / "llm", tmp_path / "mgm")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        init_model(root / "clip", tmp_path / "nothing.bin", root / "llm", tmp_path / "mgm")
    with pytest.raises(FileNotFoundError, match="--llm .*no config.json"):
        init_model(root / "clip", root / "convnext", tmp_path, tmp_path / "mgm")
    with pytest.raises(ValueError, match="must be a multiple"):  # 40 px HR -> 10 cells, not a multiple of 4 tokens
        init_model(root / "clip", root / "convnext", root / "llm", tmp_path / "mgm", image_size_aux=40)
    assert _no_output(tmp_path)
    (tmp_path / "mgm").mkdir()
    (tmp_path / "mgm" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        init_model(root / "clip", root / "convnext", root / "llm", tmp_path / "mgm")


def test_open_clip_loader_rejects_a_mismatched_trunk(parts, tmp_path):
    broken = dict(parts["open_clip"])
    broken["visual.trunk.stages.1.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    torch.save(broken, tmp_path / "broken.bin")
    with pytest.raises((ValueError, RuntimeError), match="fc1|pwconv1"):
        load_open_clip_convnext(tmp_path / "broken.bin")


def test_mgm_init_through_the_cli(parts, tmp_path, monkeypatch, capsys):
    from minigemini import cli

    root = parts["root"]
    argv = ["init", "--vision", str(root / "clip"), "--vision-aux", str(root / "convnext"), "--llm", str(root / "llm")]
    assert cli.main([*argv, "--out", str(tmp_path / "mgm"), "--image-size-aux", "64"]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "mgm")]) == 2  # exists now
    assert "mgm init: error:" in capsys.readouterr().err
