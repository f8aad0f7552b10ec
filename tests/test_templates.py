"""The release's chat templates, written out by hand from the published mgm/conversation.py formats; their jinja
twins (chat_template.jinja) render the same."""

from __future__ import annotations

import itertools

import pytest
from jinja2 import TemplateError
from transformers.utils.chat_template_utils import render_jinja_template

from minigemini.templates import (
    IMAGE_PLACEHOLDER,
    TEMPLATE_NAMES,
    content_to_text,
    jinja_template,
    normalize_image_placeholders,
    render,
    render_segments,
    stop_strings,
    wrap_jinja_template,
)

# The image is written mid-sentence on purpose: the renderer must move it first, followed by "\n".
CONVERSATION = [
    {"role": "user", "content": "What is in <image> this picture?"},
    {"role": "assistant", "content": "A black cat."},
    {"role": "user", "content": "Is it sleeping?"},
    {"role": "assistant", "content": "Yes."},
]
Q1 = "<image>\nWhat is in  this picture?"
LLAVA_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

EXPECTED = {
    "vicuna_v1": f"{VICUNA_SYSTEM} USER: {Q1} ASSISTANT: A black cat.</s>USER: Is it sleeping? ASSISTANT: Yes.</s>",
    "gemma": (
        f"<start_of_turn>user\n{Q1}<end_of_turn>\n<start_of_turn>model\nA black cat.<end_of_turn>\n<eos>"
        "<start_of_turn>user\nIs it sleeping?<end_of_turn>\n<start_of_turn>model\nYes.<end_of_turn>\n<eos>"
    ),
    "llama_3": (
        f"<|start_header_id|>system<|end_header_id|>\n\n{LLAVA_SYSTEM}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q1}<|eot_id|>"
        "<|start_header_id|>system<|end_header_id|>\n\nA black cat.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nIs it sleeping?<|eot_id|>"
        "<|start_header_id|>system<|end_header_id|>\n\nYes.<|eot_id|>"
    ),
    "mistral_instruct": f"[INST] {Q1} [/INST] A black cat. </s><s>[INST] Is it sleeping? [/INST] Yes. </s>",
    "chatml_direct": (
        f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q1}<|im_end|>"
        "<|im_start|>assistant\nA black cat.<|im_end|><|im_start|>user\nIs it sleeping?<|im_end|>"
        "<|im_start|>assistant\nYes.<|im_end|>"
    ),
    "plain": "<image>A black cat.\nYes.\n",
}

# What training supervises: each answer plus the end-of-turn the model must emit (and a leading space where
# the release's tokenizer folds it into the answer's first token).
EXPECTED_SUPERVISED = {
    "vicuna_v1": [" A black cat.</s>", " Yes.</s>"],
    "gemma": ["A black cat.<end_of_turn>\n<eos>", "Yes.<end_of_turn>\n<eos>"],
    "llama_3": ["A black cat.<|eot_id|>", "Yes.<|eot_id|>"],
    "mistral_instruct": [" A black cat. </s>", " Yes. </s>"],
    "chatml_direct": ["A black cat.<|im_end|>", "Yes.<|im_end|>"],
    "plain": ["A black cat.\nYes.\n"],  # stage 1 is one image + caption; an imageless user turn adds nothing
}

GENERATION_PROMPT_END = {
    "vicuna_v1": "USER: Is it sleeping? ASSISTANT:",
    "gemma": "<start_of_turn>user\nIs it sleeping?<end_of_turn>\n<start_of_turn>model\n",
    "llama_3": (
        "<|start_header_id|>user<|end_header_id|>\n\nIs it sleeping?<|eot_id|>"
        "<|start_header_id|>system<|end_header_id|>\n\n"
    ),
    "mistral_instruct": "<s>[INST] Is it sleeping? [/INST]",
    "chatml_direct": "<|im_start|>user\nIs it sleeping?<|im_end|><|im_start|>assistant\n",
    "plain": "A black cat.\n",
}


def test_template_names():
    assert TEMPLATE_NAMES == ("vicuna_v1", "gemma", "llama_3", "mistral_instruct", "chatml_direct", "plain")
    assert IMAGE_PLACEHOLDER == "<image>"


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_two_turn_conversation_with_image(name):
    assert render(name, CONVERSATION) == EXPECTED[name]
    # a finished conversation gets no extra generation header
    assert render(name, CONVERSATION, add_generation_prompt=False) == EXPECTED[name]


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_segments_flag_exactly_the_supervised_text(name):
    segments = render_segments(name, CONVERSATION)
    assert "".join(text for text, _ in segments) == EXPECTED[name]
    assert [text for text, supervised in segments if supervised] == EXPECTED_SUPERVISED[name]
    # pieces alternate (adjacent pieces of one kind are merged) and none is empty
    assert all(text for text, _ in segments)
    assert all(a[1] != b[1] for a, b in itertools.pairwise(segments))


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_generation_prompt_is_the_unsupervised_prefix_of_training(name):
    prompt = render(name, CONVERSATION[:3], add_generation_prompt=True)
    assert prompt.endswith(GENERATION_PROMPT_END[name])
    assert render(name, CONVERSATION).startswith(prompt)
    if name == "plain":
        return
    segments = render_segments(name, CONVERSATION)
    last_answer = max(i for i, (_, supervised) in enumerate(segments) if supervised)
    assert prompt == "".join(text for text, _ in segments[:last_answer])
    assert render_segments(name, CONVERSATION[:3])[-1][1] is False


def test_generation_prompt_can_be_left_out():
    assert render("vicuna_v1", CONVERSATION[:1], add_generation_prompt=False) == f"{VICUNA_SYSTEM} USER: {Q1} "
    assert render("chatml_direct", CONVERSATION[:1], add_generation_prompt=False).endswith(f"{Q1}<|im_end|>")


def test_system_message_overrides_the_default():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>Hi"}]
    assert render("vicuna_v1", messages) == "Be brief. USER: <image>\nHi ASSISTANT:"
    assert render("llama_3", messages) == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nHi<|eot_id|><|start_header_id|>system<|end_header_id|>\n\n"
    )
    assert render("chatml_direct", messages) == (
        "<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\n<image>\nHi<|im_end|><|im_start|>assistant\n"
    )
    # templates without a system slot fold it into the first user turn (Llama-2 <<SYS>> / Gemma style)
    assert render("mistral_instruct", messages) == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image>\nHi [/INST]"
    assert render("gemma", messages) == (
        "<start_of_turn>user\nBe brief.\n\n<image>\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    assert render("plain", messages) == "<image>"  # stage 1 has no system prompt and no user text


def test_image_placeholder_normalisation():
    assert normalize_image_placeholders("What is <image> this?") == "<image>\nWhat is  this?"
    assert normalize_image_placeholders("<image>\nAlready first") == "<image>\nAlready first"
    assert normalize_image_placeholders("Compare <image> and <image>.") == "<image>\n<image>\nCompare  and ."
    assert normalize_image_placeholders("<image>") == "<image>"
    assert normalize_image_placeholders("  no image here ") == "  no image here "


def test_content_parts_are_accepted():
    parts = [{"role": "user", "content": [{"type": "text", "text": "Describe it."}, {"type": "image"}]}]
    assert render("vicuna_v1", parts) == f"{VICUNA_SYSTEM} USER: <image>\nDescribe it. ASSISTANT:"
    with pytest.raises(ValueError, match="unsupported message content part"):
        render("vicuna_v1", [{"role": "user", "content": [{"type": "video"}]}])


def test_plain_keeps_only_the_images_of_the_user_turn():
    messages = [{"role": "user", "content": "Describe <image> briefly"}, {"role": "assistant", "content": "A cat."}]
    assert render_segments("plain", messages) == [("<image>", False), ("A cat.\n", True)]
    assert render("plain", messages[:1]) == "<image>"


def test_stop_strings():
    assert stop_strings("vicuna_v1") == ["</s>"]
    assert stop_strings("gemma") == ["<end_of_turn>", "<eos>"]
    assert stop_strings("llama_3") == ["<|eot_id|>"]
    assert stop_strings("mistral_instruct") == ["</s>"]
    assert stop_strings("chatml_direct") == ["<|im_end|>"]
    assert stop_strings("plain") == ["\n"]


def test_errors():
    with pytest.raises(ValueError, match=r"unknown chat template 'llama_2'.*vicuna_v1, gemma, llama_3"):
        render("llama_2", CONVERSATION)
    with pytest.raises(ValueError, match="unknown chat template"):
        stop_strings("nope")
    with pytest.raises(ValueError, match="role 'tool'"):
        render("gemma", [{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="system message must come first"):
        render("gemma", [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}])


# ------------------------------------------------------------------------------------------- jinja

# What engines render from chat_template.jinja: each release template, every way a conversation can look.
JINJA_CASES = {
    "one question with an image": [{"role": "user", "content": "What is in <image> this picture?"}],
    "text only": [{"role": "user", "content": "Hello there."}],
    "multi-turn": CONVERSATION,
    "multi-turn ending with the user": CONVERSATION[:3],
    "two images, content parts": [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "Compare"},
                {"type": "image"},
                {"type": "text", "text": " these."},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "The left one is red."}]},
        {"role": "user", "content": [{"type": "text", "text": "And a third?"}, {"type": "image"}]},
    ],
    "a system prompt": [{"role": "system", "content": "Answer in one word."}, *CONVERSATION],
    "an empty system prompt": [{"role": "system", "content": ""}, *CONVERSATION[:3]],
    "a system prompt in parts": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "<image>\nWhat?"},
    ],
    "an image in the answer text": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a <image> b"}],
    "quotes, braces and newlines": [{"role": "user", "content": 'Say "{{ x }}" and {% raw %}\n\\n it\'s fine'}],
}


@pytest.mark.parametrize("case", JINJA_CASES)
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_jinja_renders_what_the_python_template_renders(name, case):
    messages = JINJA_CASES[case]
    for generation_prompt in (True, False):
        rendered, _ = render_jinja_template(
            conversations=[messages], chat_template=jinja_template(name), add_generation_prompt=generation_prompt
        )
        assert rendered[0] == render(name, messages, add_generation_prompt=generation_prompt), (case, generation_prompt)


def test_jinja_refuses_what_the_python_template_refuses():
    bad = [
        ([{"role": "tool", "content": "x"}], "role 'tool'|role tool"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "system message must come first"),
        ([{"role": "user", "content": [{"type": "video"}]}], "unsupported message content part"),
    ]
    for messages, error in bad:
        with pytest.raises(ValueError, match=error):
            render("vicuna_v1", messages)
        with pytest.raises(TemplateError, match=error):
            render_jinja_template(conversations=[messages], chat_template=jinja_template("vicuna_v1"))


def test_a_tokenizers_own_template_gets_the_same_image_preparation():
    own = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    messages = JINJA_CASES["two images, content parts"]
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=wrap_jinja_template(own))
    prepared = [{**m, "content": normalize_image_placeholders(content_to_text(m["content"]))} for m in messages]
    expected, _ = render_jinja_template(conversations=[prepared], chat_template=own)
    assert rendered[0] == expected[0]
    assert rendered[0].startswith("[user] <image>\n<image>\nCompare these.\n")
    assert wrap_jinja_template(wrap_jinja_template(own)) == wrap_jinja_template(own)
    tool = [{"role": "tool", "content": "42"}]  # a tokenizer's template may know more roles than the release's
    assert render_jinja_template(conversations=[tool], chat_template=wrap_jinja_template(own))[0][0] == "[tool] 42\n"
