"""Hub custom code: a checkpoint saved with_code=True loads through transformers' Auto classes with
trust_remote_code=True in a venv that has torch and transformers but not minigemini (`make .venv-remote`), and gives
the same inputs and logits as this package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoTokenizer

from minigemini import MiniGeminiForConditionalGeneration, MiniGeminiProcessor
from minigemini.processing import build_processor
from minigemini.saving import save_model_and_processor
from tests.conftest import build_tokenizer, tiny_model

ROOT = Path(__file__).resolve().parents[1]
REMOTE_VENV = ROOT / ".venv-remote"
HUB_MODULES = [
    "cache_compat",
    "configuration",
    "encoders",
    "image_processing",
    "mining",
    "modeling",
    "processing",
    "templates",
]


def remote_python() -> Path:
    """The venv's python, built by `make .venv-remote/.installed` when missing or made for another transformers."""
    stamp = REMOTE_VENV / ".installed"
    if stamp.is_file() and stamp.read_text().strip() != transformers.__version__:
        shutil.rmtree(REMOTE_VENV)
    if not stamp.is_file():
        make = ["make", "-C", str(ROOT), ".venv-remote/.installed", f"PYTHON={sys._base_executable}"]
        subprocess.run([*make, f"TRANSFORMERS_VERSION={transformers.__version__}"], check=True, timeout=1200)
    return REMOTE_VENV / "bin" / "python"


def save_tiny(directory: Path, tokenizer_dir: Path, hd: bool, template: str | None, with_code: bool = True) -> Path:
    model = tiny_model("llama", hd=hd)
    processor = build_processor(model.config, AutoTokenizer.from_pretrained(tokenizer_dir), template)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    model.config.image_token_id = processor.image_token_id
    return save_model_and_processor(model, processor, directory, with_code=with_code)


def test_saved_with_its_code_it_loads_without_minigemini(tmp_path):
    from tests.conftest import CHATML_TEMPLATE

    python = remote_python()
    build_tokenizer(tmp_path / "tokenizer", chat_template=CHATML_TEMPLATE)
    normal = save_tiny(tmp_path / "normal", tmp_path / "tokenizer", hd=False, template="vicuna_v1")
    hd = save_tiny(tmp_path / "hd", tmp_path / "tokenizer", hd=True, template=None)  # the tokenizer's own template
    for directory in (normal, hd):
        assert sorted(p.stem for p in directory.glob("*.py")) == HUB_MODULES
        config = json.loads((directory / "config.json").read_text())
        assert config["auto_map"] == {
            "AutoConfig": "configuration.MiniGeminiConfig",
            "AutoModelForImageTextToText": "modeling.MiniGeminiForConditionalGeneration",
        }
        assert json.loads((directory / "processor_config.json").read_text())["auto_map"] == {
            "AutoProcessor": "processing.MiniGeminiProcessor"
        }
    image = tmp_path / "gradient.png"
    Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3)).save(image)

    output = tmp_path / "remote.pt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    probe = [str(python), str(ROOT / "tests" / "helpers" / "remote_code_probe.py"), str(output), str(image)]
    subprocess.run([*probe, str(normal), str(hd)], check=True, timeout=600, env=env, cwd=tmp_path)
    remote = torch.load(output, weights_only=False)

    for directory in (normal, hd):
        got = remote[str(directory)]
        assert all(module.startswith("transformers_modules.") for module in got["classes"]), got["classes"]
        model = MiniGeminiForConditionalGeneration.from_pretrained(directory).eval()
        processor = MiniGeminiProcessor.from_pretrained(directory)
        messages = [
            {"role": "user", "content": [{"type": "image", "path": str(image)}, {"type": "text", "text": "What?"}]}
        ]
        inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
        assert got["prompt"] == processor.apply_chat_template(messages)
        assert got["inputs"].keys() == inputs.keys()
        for key in inputs:
            assert torch.equal(got["inputs"][key], inputs[key]), key
        with torch.inference_mode():
            logits = model(**inputs).logits
        # Same code, same weights: only the float summation order may differ between two processes (thread count,
        # kernel choice), so the logits agree to float32 rounding rather than bit for bit.
        torch.testing.assert_close(got["logits"], logits, rtol=1e-4, atol=1e-5)


def test_plain_saves_carry_no_code(tmp_path):
    build_tokenizer(tmp_path / "tokenizer")
    with_code = save_tiny(tmp_path / "with", tmp_path / "tokenizer", hd=False, template="vicuna_v1")
    plain = save_tiny(tmp_path / "plain", tmp_path / "tokenizer", hd=False, template="vicuna_v1", with_code=False)
    assert len(list(with_code.glob("*.py"))) == len(HUB_MODULES) and not list(plain.glob("*.py"))
    assert "auto_map" not in json.loads((plain / "config.json").read_text())
    assert "auto_map" not in json.loads((plain / "processor_config.json").read_text())
    assert "auto_map" not in json.loads((plain / "tokenizer_config.json").read_text())


def test_the_hub_modules_import_each_other_relatively():
    """Copied flat beside the weights, an absolute `minigemini.` import would fail where the package is absent (the
    import-linter contract "hub-code" keeps the rest of the package out of them)."""
    import ast

    for name in HUB_MODULES:
        tree = ast.parse((ROOT / "minigemini" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("minigemini"), (name, node.module)
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("minigemini") for alias in node.names), name
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.module in HUB_MODULES, (name, node.module)  # `from .x import`, found by transformers
