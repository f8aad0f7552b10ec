"""`mgm export-default`: the default model as one plain checkpoint (LoRA merged, processor included) that
`from_pretrained` loads with the very weights `load_default_model` builds; an occupied folder is refused in one line.
`--model default` loads the same checkpoint, written once into the cache, through the library's loader."""

import json

import pytest
import torch

from minigemini import MiniGeminiForConditionalGeneration, MiniGeminiProcessor
from minigemini.cli import main
from minigemini.synthetic.default_model import load_default_model


@pytest.fixture(scope="module")
def reference():
    return load_default_model(dtype=torch.float32)


def same_weights(model, reference_model) -> bool:
    exported, expected = model.state_dict(), reference_model.state_dict()
    return exported.keys() == expected.keys() and all(torch.equal(exported[key], expected[key]) for key in expected)


def test_the_export_loads_with_the_default_models_weights_and_processor(tmp_path, capsys, reference):
    out = tmp_path / "default-mgm"
    assert main(["export-default", "--output", str(out)]) == 0
    assert f"Wrote the default model to {out}" in capsys.readouterr().out
    assert not (out / "adapter_config.json").exists()  # merged: no adapter left to apply
    model = MiniGeminiForConditionalGeneration.from_pretrained(out)
    processor = MiniGeminiProcessor.from_pretrained(out)
    reference, reference_processor = reference
    assert same_weights(model, reference)
    assert processor.image_seq_length == reference_processor.image_seq_length == 64
    assert processor.image_token_id == model.config.image_token_id
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\nWhat is it?"}]
    prompt = processor.apply_chat_template(messages)
    assert prompt == reference_processor.apply_chat_template(messages) and "<|im_start|>" in prompt  # SmolLM2's own
    assert json.loads((out / "config.json").read_text())["architectures"] == ["MiniGeminiForConditionalGeneration"]


def test_hd_exports_the_hd_variant(tmp_path):
    out = tmp_path / "default-mgm-hd"
    assert main(["export-default", "--output", str(out), "--hd", "--dtype", "bf16"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["image_grid"], config["image_global"], config["image_size_aux"]) == (2, True, 384)
    assert MiniGeminiProcessor.from_pretrained(out).image_seq_length == 5 * 64
    assert MiniGeminiForConditionalGeneration.from_pretrained(out).dtype == torch.bfloat16


def test_an_occupied_output_folder_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export-default", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgm export-default: error: ") and "not empty" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_model_default_is_a_plain_checkpoint_written_once_and_loaded_by_the_loader(tmp_path, monkeypatch, reference):
    from minigemini.cli.options import model_directory
    from minigemini.loading import load_pretrained
    from minigemini.synthetic.default_model import default_checkpoint

    written = default_checkpoint(cache=tmp_path)
    model, processor = load_pretrained(written, device="cpu", dtype="fp32")
    assert same_weights(model, reference[0]) and processor.image_seq_length == 64
    stamp = (written / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setenv("MGM_CACHE", str(tmp_path))  # where `--model default` looks
    assert model_directory("default") == str(written) and default_checkpoint() == written
    assert (written / "model.safetensors").stat().st_mtime_ns == stamp  # written once
    assert model_directory("runs/mine") == "runs/mine"
