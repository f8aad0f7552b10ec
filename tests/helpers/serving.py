"""Helpers for the chat / serve / web / generation tests: a tiny saved Mini-Gemini with a processor, scripted answers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import torch
from PIL import Image
from transformers import AutoTokenizer, LogitsProcessor

from minigemini import MiniGeminiForConditionalGeneration, MiniGeminiImageProcessor, MiniGeminiProcessor
from tests.conftest import CHATML_TEMPLATE, build_tokenizer, tiny_config


def save_tiny_mgm(path, max_position_embeddings: int = 512, seed: int = 0):
    """A random 4x4-token Mini-Gemini (LR 32 px, HR 64 px) + ChatML tokenizer/processor, saved to ``path``."""
    build_tokenizer(path, chat_template=CHATML_TEMPLATE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = MiniGeminiImageProcessor(image_size=32, image_size_aux=64)
    config = tiny_config("llama")
    processor = MiniGeminiProcessor(image_processor, tokenizer, image_seq_length=config.image_seq_length)
    config = tiny_config(
        "llama",
        image_token_id=processor.image_token_id,
        text_config={
            **config.text_config.to_dict(),
            "vocab_size": len(tokenizer),
            "max_position_embeddings": max_position_embeddings,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
    )
    torch.manual_seed(seed)
    model = MiniGeminiForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


class ScriptedAnswer(LogitsProcessor):
    """Forces every row to produce ``token_ids`` (then end-of-sequence): the model runs for real, the text is known."""

    def __init__(self, token_ids: list[int], prompt_length: int | None = None):
        self.token_ids = token_ids
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        token = self.token_ids[min(step, len(self.token_ids) - 1)]
        forced[:, token] = 0.0
        return forced


def script_answers(monkeypatch, processor_or_tokenizer, answer: str):
    """Make every ``generate`` call of MiniGeminiForConditionalGeneration answer ``answer`` then EOS."""
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    original = MiniGeminiForConditionalGeneration.generate

    def generate(self, *args, **kwargs):
        kwargs["logits_processor"] = [ScriptedAnswer(ids)]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MiniGeminiForConditionalGeneration, "generate", generate)


def solid(colour, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def run_in_thread(uvicorn_server):
    """Serve a `uvicorn.Server` from a thread on a free 127.0.0.1 port; yields the base URL, stops on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(30)
        sock.close()
