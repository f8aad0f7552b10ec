"""Tiny models, processors, images and data files for the data and training tests (all built locally)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer

from minigemini import MiniGeminiForConditionalGeneration, MiniGeminiImageProcessor, MiniGeminiProcessor
from tests.conftest import build_tokenizer, tiny_config

# Special tokens the release templates use; real tokenizers (Gemma, Llama-3, Yi) have them as single tokens.
TEMPLATE_SPECIAL_TOKENS = [
    "<start_of_turn>",
    "<end_of_turn>",
    "<eos>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


def make_tokenizer(path, chat_template: str | None = None):
    build_tokenizer(path, chat_template=chat_template)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_tokens(TEMPLATE_SPECIAL_TOKENS, special_tokens=True)
    return tokenizer


def make_processor(tokenizer, template: str | None = "vicuna_v1", hd: bool = False) -> MiniGeminiProcessor:
    image_processor = MiniGeminiImageProcessor(
        image_size=32, image_size_aux=128 if hd else 64, image_grid=2 if hd else 1, image_global=hd
    )
    return MiniGeminiProcessor(image_processor, tokenizer, image_seq_length=80 if hd else 16, chat_template=template)


def make_model_dir(path, template: str | None = "vicuna_v1", seed: int = 0, chat_template: str | None = None) -> str:
    """A saved tiny Mini-Gemini (llama LLM, vocab matching the tokenizer) with its processor, like `mgm init` makes."""
    os.makedirs(path, exist_ok=True)
    tokenizer = make_tokenizer(path, chat_template=chat_template)
    processor = make_processor(tokenizer, template)
    config = tiny_config(image_token_id=processor.image_token_id)
    text = config.text_config
    text.vocab_size = len(tokenizer)
    text.bos_token_id, text.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    text.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = MiniGeminiForConditionalGeneration(config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def write_images(folder, count: int = 4, seed: int = 0) -> list[str]:
    """Small random RGB images of different shapes; returns their file names (relative to folder)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for index in range(count):
        height, width = 12 + 4 * (index % 3), 20 - 3 * (index % 2)
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        name = f"img{index}.png"
        Image.fromarray(pixels).save(os.path.join(folder, name))
        names.append(name)
    return names


def write_jsonl(path, records) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(record if isinstance(record, str) else json.dumps(record))
            f.write("\n")
    return str(path)


def conversation(question: str, answer: str, image=None, more=()) -> dict:
    turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    for q, a in more:
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    record = {"conversations": turns}
    if image is not None:
        record["image"] = image
    return record


CAPTIONS = [
    "A black cat sleeping on a red sofa.",
    "A small dog and a blue ball.",
    "The photo shows a curious cat.",
    "A red ball on a blue sofa.",
]


def caption_records(images: list[str]) -> list[dict]:
    """Stage-1 style records: image + short caption."""
    return [
        conversation("<image>\nDescribe the image.", CAPTIONS[i % len(CAPTIONS)], image=name)
        for i, name in enumerate(images)
    ]


def assert_same_adapter(before_dir, after_dir) -> None:
    """Two adapter folders hold the same tensors (a stage at lr 1e-12 saves what it loaded)."""
    from safetensors.torch import load_file

    before, after = (load_file(os.path.join(folder, "adapter_model.safetensors")) for folder in (before_dir, after_dir))
    assert before.keys() == after.keys()
    lora_b = [k for k in before if "lora_B" in k]
    assert lora_b and any(before[k].abs().max() > 0 for k in lora_b)  # trained, so a fresh adapter (B = 0) differs
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=1e-6)
