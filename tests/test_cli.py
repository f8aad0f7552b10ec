import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minigemini.cli import main

from .conftest import CHATML_TEMPLATE, build_tokenizer


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm")
    build_tokenizer(path, chat_template=CHATML_TEMPLATE)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300, max_position_embeddings=2048,
                         bos_token_id=0, eos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_demo_answers_about_the_bundled_image(tiny_llm_dir, capsys):
    assert main(["demo", "--llm", str(tiny_llm_dir), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "Visual tokens: 576 (1 view(s) x 24^2), each mining a 8x8 window" in out
    assert "LR input   (1, 3, 336, 336)   HR input (1, 3, 768, 768)" in out
    assert re.search(r"Generated [1-4] tokens in", out)


def test_demo_reports_a_bad_image_as_one_clear_line(tiny_llm_dir, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    assert main(["demo", "--llm", str(tiny_llm_dir), "--image", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgm demo: error: ") and "notes.png" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
