"""Published-checkpoint conversion: tiny random checkpoints in the release's exact layout -> this package's format.

Parity is checked against a reference forward written from DESIGN.md §2 on the raw release tensors
(tests/helpers/tiny_release.py), not against this package's modules.
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

from minigemini import MiniGeminiForConditionalGeneration
from minigemini.cli import convert
from minigemini.convert.release import (
    RELEASE_CONVERSION,
    convert_release_checkpoint,
    is_release_checkpoint,
    load_release_checkpoint,
    load_stage1_projector,
    rename_release_key,
)
from minigemini.modeling import RELEASE_KEY_MAPPING
from minigemini.processing import MiniGeminiProcessor
from minigemini.templates import jinja_template
from tests.helpers.tiny_release import (
    IMAGE_TOKEN_INDEX,
    make_release,
    make_tokenizer,
    reference_logits,
    text_config_dict,
)


def _images(count, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(40, 30), (25, 50), (64, 64)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:count]]


def _release_ids(ids: list[int], image_token_id: int, per_image: int) -> list[int]:
    """Our expanded ids -> the release's ids (each run of image tokens becomes one IMAGE_TOKEN_INDEX)."""
    out, i = [], 0
    while i < len(ids):
        if ids[i] == image_token_id:
            out.append(IMAGE_TOKEN_INDEX)
            i += per_image
        else:
            out.append(ids[i])
            i += 1
    return out


def _no_partial_dirs(parent: Path):
    return [p.name for p in parent.iterdir() if ".partial-" in p.name]


CASES = [
    # family, hd, architecture prefix, weights layout
    ("llama", False, "MGM", "safetensors"),
    ("llama", True, "MiniGemini", "bin"),
    ("gemma", False, "MiniGemini", "single"),
    ("gemma", True, "MGM", "safetensors"),
    ("mixtral", False, "MGM", "safetensors"),
    ("mistral", True, "MiniGemini", "bin"),
]


@pytest.mark.parametrize("family,hd,prefix,weights", CASES)
def test_converted_model_matches_the_release_forward(tmp_path, family, hd, prefix, weights):
    release = make_release(tmp_path / "release", family, hd=hd, prefix=prefix, weights=weights)
    destination = tmp_path / "converted"
    convert_release_checkpoint(release.path, destination)
    assert not _no_partial_dirs(tmp_path)

    model = MiniGeminiForConditionalGeneration.from_pretrained(destination).eval()
    processor = MiniGeminiProcessor.from_pretrained(destination)
    config = model.config
    assert config.image_grid == (2 if hd else 1) and config.image_global == hd
    assert config.text_config.model_type == family
    assert config.image_token_id == processor.image_token_id
    assert processor.image_seq_length == config.image_seq_length == (80 if hd else 16)

    text = "USER: <image>\nwhat is in this image ? <image> describe it ASSISTANT:"
    inputs = processor(text, images=_images(2))
    ids = inputs["input_ids"][0].tolist()
    with torch.no_grad():
        ours = model(**inputs).logits
        release_ids = _release_ids(ids, config.image_token_id, config.image_seq_length)
        expected = reference_logits(release, release_ids, inputs["pixel_values"], inputs["high_res_pixel_values"])
    vocab = release.llm.config.vocab_size
    assert ours.shape[1] == expected.shape[1] == len(ids)
    torch.testing.assert_close(ours[..., :vocab], expected, rtol=0, atol=1e-4)

    # Saved in this package's own names, not the release's.
    weight_files = sorted(destination.glob("*.safetensors"))
    keys = {k for f in weight_files for k in safe_open(str(f), "pt").keys()}  # noqa: SIM118  (safe_open is not iterable)
    assert not [k for k in keys if "vlm_uni" in k or "vision_tower.vision_tower" in k or "vision_stages" in k]
    assert any(k.startswith("model.mining.query.") for k in keys)


def test_mixtral_experts_are_fused_by_transformers_and_used(tmp_path):
    release = make_release(tmp_path / "release", "mixtral")
    model, _ = load_release_checkpoint(release.path)
    experts = model.model.language_model.layers[0].mlp.experts
    reference = release.llm.model.layers[0].mlp.experts
    assert torch.equal(experts.gate_up_proj, reference.gate_up_proj)
    assert torch.equal(experts.down_proj, reference.down_proj)
    w1 = release.tensors["model.layers.0.block_sparse_moe.experts.3.w1.weight"]
    assert torch.equal(experts.gate_up_proj[3, : w1.shape[0]], w1)


def test_release_is_recognised_by_its_keys_not_its_path(tmp_path):
    release = make_release(tmp_path / "anything", "llama")
    assert is_release_checkpoint(release.path)
    llm_dir = tmp_path / "mgm-7b-looking-name"
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **text_config_dict("llama", 60)))
    llm.save_pretrained(llm_dir)
    assert not is_release_checkpoint(llm_dir)
    with pytest.raises(ValueError, match="not a Mini-Gemini release checkpoint"):
        load_release_checkpoint(llm_dir)
    converted = tmp_path / "converted"
    convert_release_checkpoint(release.path, converted)
    assert not is_release_checkpoint(converted)
    assert not is_release_checkpoint(tmp_path / "does-not-exist")


def test_the_model_reaches_the_converter_through_its_hook(monkeypatch, tmp_path):
    """The core cannot import minigemini.convert: importing the package registers the converter with the model; a
    checkpoint's own copied code has none."""
    assert MiniGeminiForConditionalGeneration.release_conversion is RELEASE_CONVERSION
    monkeypatch.setattr(MiniGeminiForConditionalGeneration, "release_conversion", None)
    with pytest.raises(RuntimeError, match="needs the minigemini package"):
        MiniGeminiForConditionalGeneration.from_release_checkpoint(tmp_path)


def test_from_pretrained_loads_a_release_directory(tmp_path):
    release = make_release(tmp_path / "release", "gemma", hd=True)
    model = MiniGeminiForConditionalGeneration.from_pretrained(release.path)
    reference, _ = load_release_checkpoint(release.path)
    assert model.config.image_token_id == reference.config.image_token_id
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "family,tokenizer,expected",
    [
        ("llama", "vicuna", "vicuna_v1"),
        ("gemma", "gemma", "gemma"),
        ("llama", "llama_3", "llama_3"),
        ("llama", "yi", "chatml_direct"),
        ("mixtral", "mixtral", "mistral_instruct"),
    ],
)
def test_chat_template_follows_the_llm(tmp_path, family, tokenizer, expected):
    release = make_release(tmp_path / "release", family, tokenizer=tokenizer)
    _, processor = load_release_checkpoint(release.path)
    assert processor.template_name == expected
    _, processor = load_release_checkpoint(release.path, chat_template="plain")
    assert processor.template_name == "plain"


def test_command_line_convert_with_template_and_dtype(tmp_path, capsys):
    release = make_release(tmp_path / "release", "llama", tokenizer="llama_3")
    parser = argparse.ArgumentParser(prog="mgm")
    convert.add_parser(parser.add_subparsers(dest="command", required=True))
    destination = tmp_path / "out"
    args = parser.parse_args(
        ["convert", str(release.path), str(destination), "--template", "chatml_direct", "--dtype", "bfloat16"]
    )
    assert args.func(args) == 0
    assert "template=chatml_direct" in capsys.readouterr().out
    assert json.loads((destination / "processor_config.json").read_text())["template_name"] == "chatml_direct"
    assert (destination / "chat_template.jinja").read_text() == jinja_template("chatml_direct")
    assert type(AutoProcessor.from_pretrained(destination)) is MiniGeminiProcessor  # a converted checkpoint
    assert not list(destination.glob("*.py"))
    args = parser.parse_args(["convert", str(release.path), str(tmp_path / "coded"), "--with-code"])
    assert args.func(args) == 0
    assert (tmp_path / "coded" / "modeling.py").is_file()  # Hub custom code: tests/test_remote_code.py loads it
    assert json.loads((tmp_path / "coded" / "config.json").read_text())["auto_map"]["AutoModelForImageTextToText"]
    model = MiniGeminiForConditionalGeneration.from_pretrained(destination, dtype="auto")
    assert model.dtype == torch.bfloat16
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", str(release.path), str(tmp_path / "x"), "--template", "nope"])


def test_without_a_tokenizer_the_image_token_is_a_new_last_row(tmp_path):
    release = make_release(tmp_path / "release", "llama", tokenizer=None)
    model = convert_release_checkpoint(release.path, tmp_path / "out")
    rows = release.tensors["model.embed_tokens.weight"].shape[0]
    assert load_release_checkpoint(release.path)[1] is None
    assert model.config.image_token_id == rows
    assert model.get_input_embeddings().weight.shape[0] == rows + 1
    assert not (tmp_path / "out" / "processor_config.json").exists()


def test_padded_vocabulary_reuses_a_spare_row(tmp_path):
    release = make_release(tmp_path / "release", "llama", extra_vocab_rows=8)
    model, processor = load_release_checkpoint(release.path)
    rows = release.tensors["model.embed_tokens.weight"].shape[0]
    assert processor.image_token_id < rows
    assert model.get_input_embeddings().weight.shape[0] == rows


def test_clip_head_count_comes_from_a_local_tower_config(tmp_path):
    release = make_release(tmp_path / "release", "llama", clip_heads=4)
    tower = tmp_path / "clip-tower"
    release.clip_config.save_pretrained(tower)
    config = json.loads((release.path / "config.json").read_text())
    config["mm_vision_tower"] = str(tower)
    (release.path / "config.json").write_text(json.dumps(config))
    model, processor = load_release_checkpoint(release.path)
    assert model.config.vision_config.num_attention_heads == 4
    inputs = processor("<image> describe", images=_images(1))
    ids = _release_ids(inputs["input_ids"][0].tolist(), model.config.image_token_id, 16)
    with torch.no_grad():
        expected = reference_logits(release, ids, inputs["pixel_values"], inputs["high_res_pixel_values"])
        torch.testing.assert_close(model(**inputs).logits[..., : expected.shape[-1]], expected, rtol=0, atol=1e-4)


def test_converted_model_generates(tmp_path):
    release = make_release(tmp_path / "release", "llama", hd=True)
    model, processor = load_release_checkpoint(release.path)
    inputs = processor(["<image> describe it", "what is this ? <image>"], images=_images(2))
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 4)


def test_stage1_projector_loads_onto_a_model(tmp_path):
    release = make_release(tmp_path / "release", "llama")
    model, _ = load_release_checkpoint(release.path)
    stage1 = make_release(tmp_path / "other", "llama", seed=7)
    weights = {k: v for k, v in stage1.tensors.items() if k.startswith(("model.mm_projector.", "model.vlm_uni_"))}
    torch.save(weights, tmp_path / "mm_projector.bin")
    loaded = load_stage1_projector(model, tmp_path / "mm_projector.bin")
    assert len(loaded) == len(weights) == 16
    state = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(state[rename_release_key(key)], value), key
    torch.save({**weights, "model.layers.0.mlp.up_proj.weight": torch.zeros(1)}, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match="not projector or mining weights: model.layers.0.mlp.up_proj.weight"):
        load_stage1_projector(model, tmp_path / "bad.bin")
    torch.save({"model.mm_projector.0.weight": torch.zeros(3, 3)}, tmp_path / "wrong.bin")
    with pytest.raises(ValueError, match="does not fit"):
        load_stage1_projector(model, tmp_path / "wrong.bin")


def test_key_mapping_covers_every_release_component():
    assert rename_release_key("model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == (
        "model.vision_tower.model.vision_model.encoder.layers.0.mlp.fc1.weight"
    )
    assert rename_release_key("model.vision_tower_aux.vision_stages.2.blocks.11.mlp.fc1.bias") == (
        "model.vision_tower_aux.convnext.encoder.stages.2.layers.11.pwconv1.bias"
    )
    assert rename_release_key("model.vision_tower_aux.vision_stages.3.blocks.0.gamma") == (
        "model.vision_tower_aux.convnext.encoder.stages.3.layers.0.layer_scale_parameter"
    )
    assert rename_release_key("model.vision_tower_aux.vision_stages.1.downsample.1.weight") == (
        "model.vision_tower_aux.convnext.encoder.stages.1.downsampling_layer.1.weight"
    )
    assert rename_release_key("model.vision_tower_aux.vision_stem.1.bias") == (
        "model.vision_tower_aux.convnext.embeddings.layernorm.bias"
    )
    assert rename_release_key("model.vlm_uni_aux_projector.1.weight") == "model.mining.key.1.weight"
    assert rename_release_key("model.mm_projector.weight") == "model.mm_projector.0.weight"
    assert rename_release_key("model.layers.3.self_attn.q_proj.weight") == (
        "model.language_model.layers.3.self_attn.q_proj.weight"
    )
    assert rename_release_key("lm_head.weight") == "lm_head.weight"
    assert all(pattern.startswith("^") for pattern in RELEASE_KEY_MAPPING)


# ------------------------------------------------------------------------------------------------------ bad input


def _edit_json(path: Path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _missing_shard(release):
    (release.path / "model-00002-of-00003.safetensors").unlink()
    return FileNotFoundError, "model-00002-of-00003.safetensors"


def _truncated_shard(release):
    shard = release.path / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return ValueError, "model-00003-of-00003.safetensors is damaged or truncated"


def _index_names_a_missing_file(release):
    def edit(data):
        data["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors"

    _edit_json(release.path / "model.safetensors.index.json", edit)
    return FileNotFoundError, "model-00009-of-00009.safetensors"


def _index_disagrees_with_shards(release):
    def edit(data):
        key = "model.norm.weight"
        data["weight_map"][key] = next(f for f in set(data["weight_map"].values()) if f != data["weight_map"][key])

    _edit_json(release.path / "model.safetensors.index.json", edit)
    return ValueError, "'model.norm.weight' in model-0000"


def _unknown_architecture(release):
    _edit_json(release.path / "config.json", lambda d: d.update(architectures=["MGMQwen2ForCausalLM"]))
    return ValueError, "unknown architecture 'MGMQwen2ForCausalLM'"


def _not_a_checkpoint(release):
    (release.path / "config.json").unlink()
    return FileNotFoundError, "has no config.json"


def _unknown_weights(release):
    from safetensors.torch import save_file

    save_file({"model.vision_fpn.0.weight": torch.zeros(2)}, str(release.path / "model-00003-of-00003.safetensors"))
    _edit_json(
        release.path / "model.safetensors.index.json",
        lambda d: d.update(
            weight_map={k: v for k, v in d["weight_map"].items() if "00003" not in v}
            | {"model.vision_fpn.0.weight": "model-00003-of-00003.safetensors"}
        ),
    )
    return ValueError, "does not know, refusing to drop them: model.vision_fpn.0.weight"


def _towers_stripped(release):
    from tests.helpers.tiny_release import write_weights

    for f in release.path.glob("model-*.safetensors"):
        f.unlink()
    tensors = {k: v for k, v in release.tensors.items() if "vision_tower." not in k}
    write_weights(release.path, tensors, "safetensors", 3)
    return ValueError, r"lacks the weights of the LR vision tower \(CLIP\)"


def _llm_weight_missing(release):
    from tests.helpers.tiny_release import write_weights

    for f in release.path.glob("model-*.safetensors"):
        f.unlink()
    tensors = {k: v for k, v in release.tensors.items() if k != "model.layers.1.self_attn.q_proj.weight"}
    write_weights(release.path, tensors, "safetensors", 3)
    return ValueError, "not in the checkpoint: model.language_model.layers.1.self_attn.q_proj.weight"


def _projector_shape_wrong(release):
    from tests.helpers.tiny_release import write_weights

    for f in release.path.glob("model-*.safetensors"):
        f.unlink()
    tensors = dict(release.tensors)
    tensors["model.mm_projector.2.weight"] = torch.zeros(40, 48)
    write_weights(release.path, tensors, "safetensors", 3)
    return ValueError, r"wrong shape: model.mm_projector.2.weight \(checkpoint \(40, 48\), model \(48, 48\)\)"


def _hidden_size_aux_disagrees(release):
    _edit_json(release.path / "config.json", lambda d: d.update(mm_hidden_size_aux=2880))
    return ValueError, "mm_hidden_size_aux=2880 but the tower weights give 80"


@pytest.mark.parametrize(
    "damage",
    [
        _missing_shard,
        _truncated_shard,
        _index_names_a_missing_file,
        _index_disagrees_with_shards,
        _unknown_architecture,
        _not_a_checkpoint,
        _unknown_weights,
        _towers_stripped,
        _llm_weight_missing,
        _projector_shape_wrong,
        _hidden_size_aux_disagrees,
    ],
)
def test_bad_checkpoints_fail_clearly_and_write_nothing(tmp_path, damage):
    release = make_release(tmp_path / "release", "llama")
    error, message = damage(release)
    destination = tmp_path / "out"
    with pytest.raises(error, match=message):
        convert_release_checkpoint(release.path, destination)
    assert not destination.exists()
    assert not _no_partial_dirs(tmp_path)


def test_truncated_bin_shard_fails_clearly(tmp_path):
    release = make_release(tmp_path / "release", "llama", weights="bin")
    shard = release.path / "pytorch_model-00001-of-00003.bin"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(ValueError, match="pytorch_model-00001-of-00003.bin is damaged or truncated"):
        convert_release_checkpoint(release.path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    release = make_release(tmp_path / "release", "llama")

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(MiniGeminiProcessor, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        convert_release_checkpoint(release.path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not _no_partial_dirs(tmp_path)


def test_existing_destination_is_refused(tmp_path):
    release = make_release(tmp_path / "release", "llama")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_release_checkpoint(release.path, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


def test_hub_id_without_network_names_what_is_missing(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="YanweiLi/MGM-7B is not a local directory.*config.json"):
        convert_release_checkpoint("YanweiLi/MGM-7B", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tokenizer_fixture_has_the_family_tokens():
    assert "<start_of_turn>" in make_tokenizer("gemma").get_vocab()
    assert "<|eot_id|>" in make_tokenizer("llama_3").get_vocab()


def test_mgm_convert_through_the_cli(tmp_path, monkeypatch, capsys):
    from minigemini import cli

    release = make_release(tmp_path / "release", "gemma")
    assert cli.main(["convert", str(release.path), str(tmp_path / "out")]) == 0
    assert "template=gemma" in capsys.readouterr().out
    assert cli.main(["convert", str(tmp_path / "absent"), str(tmp_path / "out2")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mgm convert: error:") and "no such directory" in error
