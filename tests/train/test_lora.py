"""LoRA round trip: train -> save adapter -> load on the base -> merge -> plain checkpoint with the same logits."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from PIL import Image

from minigemini import MiniGeminiForConditionalGeneration, MiniGeminiProcessor
from minigemini.cli.merge_lora import add_parser
from minigemini.errors import UserError
from minigemini.train import TrainConfig, load_lora, train
from tests.helpers.training import (
    assert_same_adapter,
    caption_records,
    conversation,
    make_model_dir,
    write_images,
    write_jsonl,
)


def lora_settings(root, model_dir: str, output, **overrides) -> TrainConfig:
    """Stage-2 LoRA at rank 4 for two steps on the fixture's captions and chat."""
    settings = {
        "stage": 2,
        "model": model_dir,
        "data": [str(root / "data.jsonl")],
        "image_folder": [str(root / "images")],
        "output": str(output),
        "lora": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "learning_rate": 5e-3,
        "global_batch_size": 4,
        "per_device_batch_size": 4,
        "max_steps": 2,
        "precision": "fp32",
        "gradient_checkpointing": True,
        "dataloader_workers": 0,
        "warmup_ratio": 0.0,
        "progress": False,
    }
    return TrainConfig.from_sources(None, {**settings, **overrides})


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    model_dir = make_model_dir(root / "model")
    names = write_images(root / "images", 4)
    write_jsonl(root / "data.jsonl", caption_records(names) + [conversation("Say hi.", "Hi!")] * 4)
    result = train(lora_settings(root, model_dir, root / "adapter"))
    return root, model_dir, result


def logits(model, processor, root):
    image = Image.open(root / "images" / "img0.png")
    prompt = processor.apply_chat_template([{"role": "user", "content": "<image>\nDescribe the image."}])
    inputs = processor(text=prompt, images=[image])
    with torch.no_grad():  # on the CPU: on a GPU machine the trained model comes back from training on the GPU
        return model.eval().cpu()(**inputs).logits


def test_lora_adapter_saves_loads_and_merges_to_the_same_logits(lora_run, tmp_path):
    root, model_dir, result = lora_run
    adapter = result.output
    files = set(os.listdir(adapter))
    assert {"adapter_config.json", "adapter_model.safetensors", "processor_config.json", "tokenizer.json"} <= files
    assert "model.safetensors" not in files  # only the adapter (+ mining/projector) is saved

    trained = result.trainer.model
    trainable = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert any(".mining." in n for n in trainable) and any(".mm_projector." in n for n in trainable)
    assert not any(".vision_tower" in n or "lm_head" in n for n in trainable)
    assert not any(("language_model" in n and "lora_" not in n) for n in trainable)

    processor = MiniGeminiProcessor.from_pretrained(adapter)
    expected = logits(trained, processor, root)
    loaded = load_lora(adapter)
    torch.testing.assert_close(logits(loaded, processor, root), expected, rtol=1e-5, atol=1e-5)

    merged_dir = tmp_path / "merged"
    args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
        ["--adapter", adapter, "--output", str(merged_dir)]
    )
    assert args.func(args) == 0
    merged = MiniGeminiForConditionalGeneration.from_pretrained(merged_dir)
    assert not any("lora" in n or "modules_to_save" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(
        logits(merged, MiniGeminiProcessor.from_pretrained(merged_dir), root), expected, rtol=1e-5, atol=1e-5
    )

    base = MiniGeminiForConditionalGeneration.from_pretrained(model_dir)
    base_params, merged_params = dict(base.named_parameters()), dict(merged.named_parameters())
    assert not torch.equal(base_params["model.mining.query.1.weight"], merged_params["model.mining.query.1.weight"])
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base_params[q], merged_params[q])
    for name, tensor in base_params.items():
        if name.startswith(("model.vision_tower.", "model.vision_tower_aux.")):
            assert torch.equal(tensor, merged_params[name]), name


def test_qlora_trains_a_4bit_llm_on_a_cpu(lora_run, tmp_path, monkeypatch):
    """--bits 4: the LLM's linear layers load in nf4 (bitsandbytes runs on a CPU), the vision side stays fp32, LoRA
    and the multimodal modules train; without bitsandbytes it is one line."""
    import bitsandbytes

    root, model_dir, _ = lora_run
    result = train(lora_settings(root, model_dir, tmp_path / "qlora", bits=4))
    modules = dict(result.trainer.model.named_modules())
    q_proj = next(m for n, m in modules.items() if n.endswith("layers.0.self_attn.q_proj.base_layer"))
    assert isinstance(q_proj, bitsandbytes.nn.Linear4bit)
    kept = [m for n, m in modules.items() if "vision_tower" in n or "mining" in n or n.endswith("lm_head")]
    assert kept and not any(isinstance(m, bitsandbytes.nn.Linear4bit) for m in kept)
    assert torch.isfinite(torch.tensor(result.summary["train_loss"])) and result.summary["steps"] == 2
    assert os.path.isfile(os.path.join(result.output, "adapter_config.json"))

    real = __import__("importlib").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(UserError, match=r'^quantization nf4 needs bitsandbytes: pip install "minigemini\[quant\]"$'):
        train(lora_settings(root, model_dir, tmp_path / "none", bits=4))


def test_lora_is_refused_in_stage_one():
    with pytest.raises(ValueError, match="stage 2"):  # where the settings are built
        TrainConfig.from_sources(None, {"stage": 1, "lora": True, "model": "m", "data": ["d"], "output": "o"})


def test_a_lora_adapter_as_the_model_trains_on_in_that_adapter(lora_run, tmp_path, caplog):
    root, _, first = lora_run
    settings = {
        "stage": 2,
        "model": first.output,
        "data": [str(root / "data.jsonl")],
        "image_folder": [str(root / "images")],
        "output": str(tmp_path / "continued"),
        "lora": True,
        "learning_rate": 1e-12,  # a step that moves nothing: what is saved is what was loaded
        "global_batch_size": 4,
        "per_device_batch_size": 4,
        "max_steps": 1,
        "precision": "fp32",
        "dataloader_workers": 0,
        "warmup_ratio": 0.0,
        "progress": False,
    }
    continued = train(TrainConfig.from_sources(None, settings))
    assert "goes on at its own LoRA rank 4 and alpha 8" in caplog.text  # the settings' default rank is not applied
    trainable = {n for n, p in continued.trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert any(".mining." in n for n in trainable) and any(".mm_projector." in n for n in trainable)

    assert_same_adapter(first.output, continued.output)

    with pytest.raises(UserError, match="is a LoRA adapter: pass --lora"):
        train(TrainConfig.from_sources(None, {**settings, "lora": False, "output": str(tmp_path / "full")}))
