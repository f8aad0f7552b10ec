"""MiniGeminiProcessor with a tiny byte-level BPE tokenizer trained here (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.processing import MiniGeminiProcessor
from minigemini.templates import (
    content_to_text,
    jinja_template,
    normalize_image_placeholders,
    render,
    wrap_jinja_template,
)
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
    assert processor.template_name == "vicuna_v1" and processor.chat_template == jinja_template("vicuna_v1")
    assert processor.apply_chat_template(messages) == render("vicuna_v1", messages)
    assert processor.apply_chat_template(messages).endswith("USER: <image>\nWhat is this ? ASSISTANT:")

    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    own = MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ, chat_template=None)
    assert own.template_name is None and own.chat_template == wrap_jinja_template(tokenizer.chat_template)
    assert own.apply_chat_template(messages) == "<|user|><image>\nWhat is this ?\n<|assistant|>"
    assert own.apply_chat_template(messages, add_generation_prompt=False) == "<|user|><image>\nWhat is this ?\n"
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is this"}, {"type": "image"}]}]
    assert own.apply_chat_template(parts) == "<|user|><image>\nWhat is this\n<|assistant|>"
    tokenizer.chat_template = None
    bare = MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ, chat_template=None)
    with pytest.raises(ValueError, match="no jinja chat template"):
        bare.apply_chat_template(messages)
    with pytest.raises(ValueError, match="unknown chat template 'vicuna'"):
        MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ, chat_template="vicuna")


@pytest.mark.parametrize(
    "messages, error",
    [
        ([{"role": "bot", "content": "hi"}], "message 0 has role 'bot'"),
        ([{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}], "a system message must come first"),
        ([{"role": "user", "content": [{"type": "video"}]}], "unsupported message content part"),
    ],
)
def test_bad_messages_get_the_errors_of_mgm_chat(processor, messages, error):
    with pytest.raises(ValueError, match=error):
        render("vicuna_v1", messages)
    with pytest.raises(ValueError, match=error):
        processor.apply_chat_template(messages)
    with pytest.raises(ValueError, match=error):
        processor.apply_chat_template(messages, tokenize=True, return_dict=True)


def test_apply_chat_template_tokenizes_with_the_images_of_the_messages(processor, tmp_path):
    red = solid((255, 0, 0))
    path = tmp_path / "blue.png"
    solid((0, 0, 255)).save(path)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": red}, {"type": "text", "text": "Which colour?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image", "path": str(path)}]},
    ]
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    prompt = processor.apply_chat_template(messages)
    assert prompt.count("<image>\n") == 2 and prompt.endswith("ASSISTANT:")
    expected = processor(prompt, images=[red, str(path)])
    assert out.keys() == expected.keys()
    for key in expected:
        assert torch.equal(out[key], expected[key]), key
    assert out["high_res_pixel_values"].mean((2, 3)).argmax(1).tolist() == [0, 2]  # red, then blue
    # a batch of conversations, left-padded
    batch = processor.apply_chat_template(
        [messages[:1], [{"role": "user", "content": "No image."}]], tokenize=True, return_dict=True
    )
    assert batch["input_ids"].shape[0] == 2 and batch["pixel_values"].shape[0] == 1
    assert batch["attention_mask"][1, 0] == 0


def reference_prompt(processor, messages, add_generation_prompt):
    """The prompt by the Python renderer of the release templates, or the tokenizer's own jinja template with each
    <image> moved to the start of its message."""
    if processor.template_name is not None:
        return render(processor.template_name, messages, add_generation_prompt=add_generation_prompt)
    normalised = [
        {**message, "content": normalize_image_placeholders(content_to_text(message.get("content", "")))}
        for message in messages
    ]
    tokenizer = processor.tokenizer
    return tokenizer.apply_chat_template(normalised, tokenize=False, add_generation_prompt=add_generation_prompt)


def reference_inputs(processor, prompts, side):
    """input_ids and attention_mask worked out from the tokenizer's ids of each prompt: a doubled leading BOS
    collapsed, each image token repeated image_seq_length times, padded with the pad token on `side`."""
    tokenizer, image_id = processor.tokenizer, processor.image_token_id
    rows = []
    for prompt in prompts:
        ids = tokenizer(prompt)["input_ids"]
        if ids[:2] == [tokenizer.bos_token_id] * 2:
            ids = ids[1:]
        rows.append([t for token in ids for t in [token] * (processor.image_seq_length if token == image_id else 1)])
    width = max(map(len, rows))
    ids, mask = [], []
    for row in rows:
        fill = width - len(row)
        pads, ones = [tokenizer.pad_token_id] * fill, [1] * len(row)
        ids.append(pads + row if side == "left" else row + pads)
        mask.append([0] * fill + ones if side == "left" else ones + [0] * fill)
    return torch.tensor(ids), torch.tensor(mask)


def test_prompts_and_tensors_match_a_reference_worked_out_here(tokenizer_dir):
    """Prompts from the templates' Python renderer (or the tokenizer's own template); ids from the tokenizer's ids
    of each prompt, expanded and padded here; pixels from the image processor on the images in text order."""
    gradient = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    images = [solid((255, 0, 0)), gradient, solid((0, 90, 200))]
    conversations = [
        [{"role": "user", "content": "What is in <image> this picture?"}],
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": "Red."},
            {"role": "user", "content": "<image>\nAnd here?"},
        ],
        [{"role": "user", "content": "No image at all."}],
    ]
    chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    for template, hd in [("vicuna_v1", False), ("llama_3", True), ("gemma", False), (None, False), (None, True)]:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        tokenizer.chat_template = chatml
        image_kwargs = {"image_grid": 2, "image_global": True} if hd else {}
        seq = 5 * 4 if hd else SEQ
        processor = MiniGeminiProcessor(small_image_processor(**image_kwargs), tokenizer, seq, chat_template=template)
        for generation_prompt in (True, False):
            prompts = [processor.apply_chat_template(c, add_generation_prompt=generation_prompt) for c in conversations]
            assert prompts == [reference_prompt(processor, c, generation_prompt) for c in conversations]
        prompts.append("<s>USER: <image>\nAgain?")  # text that starts with the BOS the tokenizer adds
        pixels = processor.image_processor([*images, images[0]], return_tensors="pt")
        for side in ("left", "right"):
            out = processor(prompts, images=[[images[0]], images[1:], [], [images[0]]], padding_side=side)
            assert list(out.keys()) == ["input_ids", "attention_mask", "pixel_values", "high_res_pixel_values"]
            input_ids, attention_mask = reference_inputs(processor, prompts, side)
            assert torch.equal(out["input_ids"], input_ids) and torch.equal(out["attention_mask"], attention_mask)
            for key in ("pixel_values", "high_res_pixel_values"):
                assert torch.equal(out[key], pixels[key]), (template, hd, side, key)


def test_what_engines_ask_of_a_processor(processor):
    """What vLLM's transformers backend reads: image_token(_id), model_input_names, _get_num_multimodal_tokens,
    mm_token_type_ids."""
    assert processor.image_token == "<image>"
    assert processor.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert processor.model_input_names == ["input_ids", "attention_mask", "pixel_values", "high_res_pixel_values"]
    counts = processor._get_num_multimodal_tokens(image_sizes=[(480, 640), (10, 10)])
    assert counts.num_image_tokens == [SEQ, SEQ] and counts.num_image_patches == [1, 1]
    assert "num_image_tokens" not in processor._get_num_multimodal_tokens()
    assert processor.image_processor.size == {"height": 16, "width": 16}
    out = processor(["<image>\nhi", "hello there"], images=[solid((1, 2, 3))], return_mm_token_type_ids=True)
    assert torch.equal(out["mm_token_type_ids"], (out["input_ids"] == processor.image_token_id).long())
    assert int(out["mm_token_type_ids"].sum()) == SEQ


def test_transformers_processor_keywords(processor, tokenizer):
    texts = ["hi", "USER: <image>\nWhat is in this picture? ASSISTANT:"]
    image = [solid((0, 0, 0))]
    plain = processor(texts, images=image)
    lengths = plain["attention_mask"].sum(1).tolist()
    # TRL's collator: padding=True, padding_side="right", truncation with max_length, add_special_tokens=False
    right = processor(
        text=texts,
        images=image,
        padding=True,
        padding_side="right",
        truncation=True,
        max_length=lengths[1] - 2,
        pad_to_multiple_of=None,
        add_special_tokens=False,
    )
    assert right["input_ids"].shape[1] == lengths[1] - 2 and right["attention_mask"][0, -1] == 0
    with pytest.raises(ValueError, match="would cut its image tokens"):
        processor(texts, images=image, truncation=True, max_length=3)
    multiple = processor(texts, images=image, pad_to_multiple_of=8)
    assert multiple["input_ids"].shape[1] % 8 == 0 and multiple["attention_mask"].sum(1).tolist() == lengths
    fixed = processor(texts, images=image, padding="max_length", max_length=lengths[1] + 3)
    assert fixed["input_ids"].shape[1] == lengths[1] + 3
    nested = processor(texts, images=image, text_kwargs={"padding_side": "right"})
    assert nested["attention_mask"][0, -1] == 0
    shorter = processor(texts, images=image, padding="max_length", max_length=3)  # pads to the longest
    assert torch.equal(shorter["input_ids"], plain["input_ids"])
    as_lists = processor(texts, images=image, common_kwargs={"return_tensors": None})  # was refused as unexpected
    assert as_lists["input_ids"] == plain["input_ids"].tolist()
    # a doubled leading BOS is collapsed before the cut: max_length tokens are kept
    cut = processor("<s>USER: hello there", truncation=True, max_length=4)["input_ids"][0].tolist()
    assert cut == processor("USER: hello there")["input_ids"][0, :4].tolist()
    with pytest.raises(ValueError, match="equal length"):
        processor(texts, images=image, padding=False)
    with pytest.raises(ValueError, match="not videos or audio"):
        processor(texts[0], videos=[np.zeros((2, 4, 4, 3), np.uint8)])
    with pytest.raises(TypeError, match="unexpected arguments: \\['colour'\\]"):
        processor(texts[0], colour="red")


def test_decode_passthrough(processor, tokenizer):
    ids = tokenizer("A black cat.", add_special_tokens=False)["input_ids"]
    assert processor.decode(ids) == "A black cat."
    assert processor.batch_decode([ids, ids]) == ["A black cat."] * 2


def test_save_load_round_trip_gives_identical_outputs(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        assert (tmp_path / name).is_file(), name
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["image_seq_length"] == SEQ and config["template_name"] == "vicuna_v1"
    assert config["processor_class"] == "MiniGeminiProcessor" and "chat_template" not in config
    assert config["image_processor"]["image_processor_type"] == "MiniGeminiImageProcessor"
    assert (tmp_path / "chat_template.jinja").read_text() == jinja_template("vicuna_v1")

    for loaded in (MiniGeminiProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MiniGeminiProcessor
        assert (loaded.image_seq_length, loaded.template_name) == (SEQ, "vicuna_v1")
        assert loaded.chat_template == processor.chat_template
        assert_same_processing(processor, loaded)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is MiniGeminiImageProcessor

    overridden = MiniGeminiProcessor.from_pretrained(tmp_path, image_seq_length=3, chat_template="gemma")
    assert (overridden.image_seq_length, overridden.template_name) == (3, "gemma")
    assert overridden.chat_template == jinja_template("gemma")
    assert overridden.tokenizer.chat_template != "gemma"  # the override is the processor's, not the tokenizer's
    assert "image_seq_length" not in overridden.tokenizer.init_kwargs


def test_without_processor_config_image_seq_length_must_be_given(processor, tmp_path):
    processor.tokenizer.save_pretrained(tmp_path)
    processor.image_processor.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pass image_seq_length="):
        MiniGeminiProcessor.from_pretrained(tmp_path)
    loaded = MiniGeminiProcessor.from_pretrained(tmp_path, image_seq_length=SEQ, chat_template="vicuna_v1")
    assert_same_processing(processor, loaded)


def assert_same_processing(processor, loaded):
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


@pytest.mark.parametrize("template", ["vicuna_v1", None])
def test_a_checkpoint_in_the_former_format_loads(tokenizer_dir, tmp_path, capfd, template):
    """What this package wrote before the processor was a ProcessorMixin: preprocessor_config.json for the image
    processor, and a processor_config.json whose chat_template is a release template's name (or null)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if template is None:
        tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    processor = MiniGeminiProcessor(small_image_processor(), tokenizer, image_seq_length=SEQ, chat_template=template)
    processor.tokenizer.save_pretrained(tmp_path)
    processor.image_processor.save_pretrained(tmp_path)
    former = {
        "chat_template": template,
        "image_seq_length": SEQ,
        "image_token": "<image>",
        "processor_class": "MiniGeminiProcessor",
    }
    (tmp_path / "processor_config.json").write_text(json.dumps(former, indent=2, sort_keys=True) + "\n")
    assert (tmp_path / "preprocessor_config.json").is_file()

    for loaded in (MiniGeminiProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MiniGeminiProcessor and loaded.template_name == template
        assert loaded.chat_template == processor.chat_template  # the tokenizer's own gets the <image> preparation
        assert_same_processing(processor, loaded)
    assert "Chat templates should be in" not in capfd.readouterr().err
    # saved again, it is in today's format
    resaved = tmp_path / "resaved"
    MiniGeminiProcessor.from_pretrained(tmp_path).save_pretrained(resaved)
    assert "chat_template" not in json.loads((resaved / "processor_config.json").read_text())
    assert_same_processing(processor, AutoProcessor.from_pretrained(resaved))
