"""transformers' image-text-to-text pipeline on checkpoints this package writes: content-list messages with PIL
images, paths and URLs, batched, normal and HD; its greedy answer is mgm.chat's, and bad input gets mgm.chat's
errors."""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, pipeline

import minigemini as mgm
from minigemini.processing import build_processor
from minigemini.saving import save_model_and_processor
from tests.conftest import CHATML_TEMPLATE, build_tokenizer, tiny_model

QUESTION = "What is in this picture?"
MAX_NEW_TOKENS = 10


def save_tiny(directory, hd: bool, template: str | None):
    tokenizer_dir = build_tokenizer(directory.with_name(directory.name + "-tokenizer"), chat_template=CHATML_TEMPLATE)
    model = tiny_model("llama", hd=hd, seed=3)
    processor = build_processor(model.config, AutoTokenizer.from_pretrained(tokenizer_dir), template)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    model.config.image_token_id = processor.image_token_id
    return str(save_model_and_processor(model, processor, directory))


@pytest.fixture(scope="module", params=["normal", "hd"])
def checkpoint(request, tmp_path_factory):
    """Normal mode with the release's vicuna_v1 template; HD mode with the tokenizer's own (ChatML) template."""
    hd = request.param == "hd"
    return save_tiny(tmp_path_factory.mktemp("mgm") / request.param, hd=hd, template=None if hd else "vicuna_v1")


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return pipeline("image-text-to-text", model=checkpoint, dtype=torch.float32)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three different pictures, as a PIL image, a file path and a URL served on the loopback interface."""
    folder = tmp_path_factory.mktemp("images")
    gradient = Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3))
    Image.new("RGB", (20, 36), (200, 30, 90)).save(folder / "tall.png")
    Image.new("RGB", (50, 20), (10, 160, 240)).save(folder / "wide.jpg")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {
        "pil": gradient,
        "path": str(folder / "tall.png"),
        "url": f"http://127.0.0.1:{server.server_address[1]}/wide.jpg",
        "url_file": str(folder / "wide.jpg"),
    }
    server.shutdown()


def message(image_block: dict, question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", **image_block}, {"type": "text", "text": question}]}]


def chat_answer(checkpoint, image, question=QUESTION):
    return mgm.chat(checkpoint, image, question, max_new_tokens=MAX_NEW_TOKENS, dtype="float32")


def test_the_pipeline_loads_this_package_through_the_auto_classes(pipe):
    assert type(pipe.model) is mgm.MiniGeminiForConditionalGeneration
    assert type(pipe.processor) is mgm.MiniGeminiProcessor


@pytest.mark.parametrize("kind", ["pil", "path", "url"])
def test_greedy_answer_equals_mgm_chat(checkpoint, pipe, images, kind):
    block = {"pil": {"image": images["pil"]}, "path": {"path": images["path"]}, "url": {"url": images["url"]}}[kind]
    out = pipe(text=message(block), max_new_tokens=MAX_NEW_TOKENS, return_full_text=False)
    answer = out[0]["generated_text"]
    # mgm.chat fetches no URL: it gets the file the URL serves
    expected = chat_answer(checkpoint, {"pil": images["pil"], "path": images["path"], "url": images["url_file"]}[kind])
    assert answer.strip() == expected and expected


def test_batched_answers_equal_mgm_chat_one_by_one(checkpoint, pipe, images):
    questions = ["Describe it.", "What colour is the thing at the top of this picture, if any?", QUESTION]
    sources = [images["pil"], images["path"], images["pil"]]
    chats = [message({"image": source} if not isinstance(source, str) else {"path": source}, question)
             for source, question in zip(sources, questions)]  # fmt: skip
    batched = pipe(text=chats, max_new_tokens=MAX_NEW_TOKENS, return_full_text=False, batch_size=3)
    expected = [chat_answer(checkpoint, source, question) for source, question in zip(sources, questions)]
    assert [result[0]["generated_text"].strip() for result in batched] == expected
    assert len(set(expected)) > 1  # the rows differ, so a padding mistake would show


def test_full_text_is_the_conversation_with_the_answer(pipe, images):
    out = pipe(text=message({"image": images["pil"]}), max_new_tokens=MAX_NEW_TOKENS)
    conversation = out[0]["generated_text"]
    assert [turn["role"] for turn in conversation] == ["user", "assistant"]


def test_bad_input_gets_the_errors_of_mgm_chat(checkpoint, pipe, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    huge = Image.new("1", (8000, 8000))  # 64 MP, over the 50 MP limit (1 bit per pixel: 8 MB)
    cases = [
        # a placeholder without its picture
        ({}, None, r"1 <image> placeholder\(s\) but 0 image\(s\)"),
        ({"path": str(notes)}, str(notes), r"not a recognised image format .*notes\.txt"),
        ({"image": huge}, huge, r"image is too large: 8000x8000"),
    ]
    for block, image, error in cases:
        with pytest.raises(ValueError, match=error):
            pipe(text=message(block), max_new_tokens=MAX_NEW_TOKENS)
        with pytest.raises(ValueError, match=error):
            chat_answer(checkpoint, image, ("<image>\n" if image is None else "") + QUESTION)
    if pipe.processor.template_name is not None:  # the release templates know three roles (a tokenizer's may know more)
        with pytest.raises(ValueError, match="message 0 has role 'bot'"):
            pipe(text=[{"role": "bot", "content": [{"type": "text", "text": "hi"}]}], max_new_tokens=2)


def test_batches_of_several_images_per_conversation_are_refused_clearly(pipe, images):
    """transformers' pipeline batches by concatenating only `pixel_values`: of a second image tensor it keeps one entry
    per conversation, so with batch_size > 1 each conversation may carry one image (README; docs/transformers.md).
    The model then names the mismatch; without batch_size the same conversations are answered one by one."""
    two = message({"image": images["pil"]})
    two[0]["content"].insert(0, {"type": "image", "image": images["pil"]})
    one = message({"image": images["pil"]})
    with pytest.raises(ValueError, match="high-res images with .* LR view"):
        pipe(text=[two, one], max_new_tokens=2, batch_size=2)
    answers = pipe(text=[two, one], max_new_tokens=2, return_full_text=False)
    assert len(answers) == 2
