"""MiniGeminiProcessor with a tiny byte-level BPE tokenizer trained here (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.processing import MiniGeminiProcessor
from minigemini.templates import render
from tests.conftest import build_tokenizer

SEQ = 7  # visual tokens per image in these tests


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def small_image_processor(**kwargs):
    return MiniGeminiImageProcessor(image_size=8, image_size_aux=16, **kwargs)


@pytest.fixture
def processor(tokenizer):
    return MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ, chat_template="vicuna_v1")


def solid(colour):
    return Image.new("RGB", (5, 3), colour)


def test_tokenizer_gets_image_and_pad_tokens(tokenizer):
    size = len(tokenizer)
    assert "<image>" not in tokenizer.get_vocab() and tokenizer.pad_token is None
    processor = MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ)
    assert len(processor.tokenizer) == size + 1 and processor.num_added_tokens == 1
    assert processor.image_token == "<image>"
    assert processor.image_token_id == tokenizer.convert_tokens_to_ids("<image>") == size
    assert tokenizer.pad_token == "</s>"  # falls back to eos
    assert tokenizer.encode("a<image>b", add_special_tokens=False).count(processor.image_token_id) == 1
    # building a second processor on the same tokenizer adds nothing
    again = MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ)
    assert again.num_added_tokens == 0 and len(tokenizer) == size + 1


def test_tokenizer_without_any_fallback_gets_a_pad_token(tokenizer_dir):
    bare = AutoTokenizer.from_pretrained(tokenizer_dir, eos_token=None, unk_token=None)
    bare.eos_token = None
    bare.unk_token = None
    processor = MiniGeminiProcessor(small_image_processor(), bare, image_seq_length=SEQ)
    assert bare.pad_token == "<pad>" and processor.num_added_tokens == 2


def test_image_placeholder_expands_to_exact_count(processor, tokenizer):
    text = "USER: <image>\nWhat is in this picture? ASSISTANT:"
    plain_ids = tokenizer(text)["input_ids"]
    out = processor(text, images=[solid((255, 0, 0))])
    ids = out["input_ids"][0].tolist()
    image_id = processor.image_token_id
    assert ids.count(image_id) == SEQ
    position = plain_ids.index(image_id)
    assert ids == plain_ids[:position] + [image_id] * SEQ + plain_ids[position + 1 :]
    assert out["attention_mask"].tolist() == [[1] * len(ids)]
    assert out["pixel_values"].shape == (1, 3, 8, 8)
    assert out["high_res_pixel_values"].shape == (1, 3, 16, 16)
    assert ids[0] == tokenizer.bos_token_id


def test_hd_sequence_length_must_cover_all_views(tokenizer):
    hd = small_image_processor(image_grid=2, image_global=True)
    with pytest.raises(ValueError, match="not a multiple of the image processor's 5 views"):
        MiniGeminiProcessor(hd, tokenizer, image_seq_length=7)
    processor = MiniGeminiProcessor(hd, tokenizer, image_seq_length=5 * 4)
    out = processor("<image>\nhi", images=solid((0, 0, 255)))
    assert out["input_ids"][0].tolist().count(processor.image_token_id) == 20
    assert out["pixel_values"].shape == (1, 5, 3, 8, 8)


def test_images_follow_text_order_flat_or_nested(processor):
    red, green, blue = solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))
    texts = ["<image>\n<image>\nCompare.", "No image here.", "<image>\nDescribe."]
    flat = processor(texts, images=[red, green, blue])
    nested = processor(texts, images=[[red, green], [], [blue]])
    for key in ("input_ids", "attention_mask", "pixel_values", "high_res_pixel_values"):
        assert torch.equal(flat[key], nested[key])
    assert flat["pixel_values"].shape[0] == 3
    dominant = flat["high_res_pixel_values"].mean((2, 3)).argmax(1).tolist()
    assert dominant == [0, 1, 2]  # red, green, blue channels
    counts = (flat["input_ids"] == processor.image_token_id).sum(1).tolist()
    assert counts == [2 * SEQ, 0, SEQ]


def test_count_mismatch_names_both_counts(processor):
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) but 1 image\(s\)"):
        processor("<image>\n<image>\nCompare.", images=[solid((0, 0, 0))])
    with pytest.raises(ValueError, match=r"0 <image> placeholder\(s\) but 1 image\(s\)"):
        processor("No placeholder.", images=[solid((0, 0, 0))])
    with pytest.raises(ValueError, match=r"1 <image> placeholder\(s\) but 0 image\(s\)"):
        processor("<image>\nWhere is the image?")
    with pytest.raises(ValueError, match=r"sample 1 has 1 <image> placeholder\(s\) but 0 image\(s\)"):
        processor(["<image>\na", "<image>\nb"], images=[[solid((0, 0, 0))], []])
    with pytest.raises(ValueError, match="images for 1 samples but 2 texts"):
        processor(["<image>\na", "b"], images=[[solid((0, 0, 0))]])


def test_left_padding_by_default_and_right_on_request(processor, tokenizer):
    texts = ["hi", "USER: What is in this picture? ASSISTANT:"]
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    pad = tokenizer.pad_token_id
    left = processor(texts)
    assert set(left.keys()) == {"input_ids", "attention_mask"}  # text only: no pixel tensors
    assert left["input_ids"].shape == (2, max(lengths))
    fill = max(lengths) - lengths[0]
    assert left["attention_mask"][0].tolist() == [0] * fill + [1] * lengths[0]
    assert left["input_ids"][0, :fill].tolist() == [pad] * fill
    assert left["input_ids"][0, fill:].tolist() == tokenizer(texts[0])["input_ids"]
    assert left["attention_mask"][1].all()
    right = processor(texts, padding_side="right")
    assert right["attention_mask"][0].tolist() == [1] * lengths[0] + [0] * fill
    assert right["input_ids"][0, : lengths[0]].tolist() == tokenizer(texts[0])["input_ids"]
    as_lists = processor(texts, return_tensors=None)
    assert as_lists["input_ids"] == left["input_ids"].tolist()


def test_text_already_starting_with_bos_gets_one_bos(processor, tokenizer):
    ids = processor("<s>hello")["input_ids"][0].tolist()
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    assert ids == processor("hello")["input_ids"][0].tolist()


def test_apply_chat_template_release_and_tokenizer_templates(processor, tokenizer):
    messages = [{"role": "user", "content": "What is this <image>?"}]
    assert processor.apply_chat_template(messages) == render("vicuna_v1", messages)
    assert processor.apply_chat_template(messages).endswith("USER: <image>\nWhat is this ? ASSISTANT:")

    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    own = MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ, chat_template=None)
    assert own.apply_chat_template(messages) == "<|user|><image>\nWhat is this ?\n<|assistant|>"
    assert own.apply_chat_template(messages, add_generation_prompt=False) == "<|user|><image>\nWhat is this ?\n"
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no jinja chat template"):
        own.apply_chat_template(messages)
    with pytest.raises(ValueError, match="unknown chat template 'vicuna'"):
        MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ, chat_template="vicuna")


def test_decode_passthrough(processor, tokenizer):
    ids = tokenizer("A black cat.", add_special_tokens=False)["input_ids"]
    assert processor.decode(ids) == "A black cat."
    assert processor.batch_decode([ids, ids]) == ["A black cat."] * 2


def test_save_load_round_trip_gives_identical_outputs(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json"):
        assert (tmp_path / name).is_file(), name
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["image_seq_length"] == SEQ and config["chat_template"] == "vicuna_v1"

    loaded = MiniGeminiProcessor.from_pretrained(tmp_path)
    assert (loaded.image_seq_length, loaded.chat_template) == (SEQ, "vicuna_v1")
    assert loaded.num_added_tokens == 0 and len(loaded.tokenizer) == len(processor.tokenizer)
    assert loaded.image_token_id == processor.image_token_id
    assert loaded.tokenizer.pad_token_id == processor.tokenizer.pad_token_id
    assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()

    messages = [{"role": "user", "content": "<image>\nWhat is in this picture?"}]
    texts = [processor.apply_chat_template(messages), "Describe the image."]
    gradient = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    assert loaded.apply_chat_template(messages) == texts[0]
    a = processor(texts, images=[gradient])
    b = loaded(texts, images=[gradient])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    overridden = MiniGeminiProcessor.from_pretrained(tmp_path, image_seq_length=3, chat_template="gemma")
    assert (overridden.image_seq_length, overridden.chat_template) == (3, "gemma")
