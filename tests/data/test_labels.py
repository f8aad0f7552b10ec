"""Label masks: for every release template (and a tokenizer's own jinja template) the supervised tokens are exactly
the assistant answers plus their end-of-turn separators, found on the full string's tokens (offsets), once."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minigemini.data import ConversationEncoder
from minigemini.modeling import IGNORE_INDEX
from minigemini.templates import TEMPLATE_NAMES, render
from tests.conftest import CHATML_TEMPLATE
from tests.helpers.training import make_processor, make_tokenizer

MESSAGES = [
    {"role": "user", "content": "What is in <image> this picture?"},
    {"role": "assistant", "content": "A black cat."},
    {"role": "user", "content": "Is it sleeping?"},
    {"role": "assistant", "content": "Yes, on a red sofa."},
]
CAPTION = [
    {"role": "user", "content": "<image>\nDescribe the image."},
    {"role": "assistant", "content": "A black cat sleeping on a red sofa."},
]

# Written out by hand from the release's formats (templates.py): answer + end-of-turn, with the leading space that
# SentencePiece tokenizers fold into the answer's first token where the release supervises it.
EXPECTED = {
    "vicuna_v1": [" A black cat.</s>", " Yes, on a red sofa.</s>"],
    "gemma": ["A black cat.<end_of_turn>\n<eos>", "Yes, on a red sofa.<end_of_turn>\n<eos>"],
    "llama_3": ["A black cat.<|eot_id|>", "Yes, on a red sofa.<|eot_id|>"],
    "mistral_instruct": [" A black cat. </s>", " Yes, on a red sofa. </s>"],
    "chatml_direct": ["A black cat.<|im_end|>", "Yes, on a red sofa.<|im_end|>"],
    "plain": ["A black cat sleeping on a red sofa.\n"],
}
SEQ = 16

GENERATION_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|im_end|>{% endgeneration %}"
    "{% else %}{{ m['content'] }}<|im_end|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"), chat_template=CHATML_TEMPLATE)


def supervised_runs(tokenizer, ids, labels) -> list[str]:
    """Decode each maximal run of supervised positions."""
    runs, current = [], []
    for position, (token, label) in enumerate(zip(ids.tolist(), labels.tolist())):
        if label != IGNORE_INDEX:
            assert label == token, f"label at {position} differs from its token"
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs]


def test_every_release_template_is_covered():
    assert set(EXPECTED) == set(TEMPLATE_NAMES)


@pytest.mark.parametrize("template", sorted(EXPECTED))
def test_supervised_tokens_are_exactly_the_answers(tokenizer, template):
    processor = make_processor(tokenizer, template)
    messages = CAPTION if template == "plain" else MESSAGES
    ids, labels = ConversationEncoder(processor, template).encode(messages)
    assert supervised_runs(processor.tokenizer, ids, labels) == EXPECTED[template]

    # one <image> expanded to SEQ image tokens, never supervised
    image_positions = np.flatnonzero(ids == processor.image_token_id)
    assert len(image_positions) == SEQ and np.all(np.diff(image_positions) == 1)
    assert np.all(labels[image_positions] == IGNORE_INDEX)
    assert labels[0] == IGNORE_INDEX  # BOS

    # the unsupervised prefix is token for token what the processor feeds the model at inference
    prompt = render(template, messages[:1], add_generation_prompt=True)
    inference_ids = processor(text=prompt, images=[Image.new("RGB", (8, 6))])["input_ids"][0].numpy()
    first_supervised = int(np.flatnonzero(labels != IGNORE_INDEX)[0])
    np.testing.assert_array_equal(ids[:first_supervised], inference_ids)


@pytest.mark.parametrize("jinja", [CHATML_TEMPLATE, GENERATION_TEMPLATE], ids=["prefix-rendering", "generation-tags"])
def test_tokenizer_jinja_template(tokenizer, jinja):
    tokenizer.chat_template = jinja
    processor = make_processor(tokenizer, template=None)
    ids, labels = ConversationEncoder(processor, None).encode(MESSAGES)
    expected_suffix = "\n" if jinja == CHATML_TEMPLATE else ""  # the prefix route keeps the template's newline
    assert supervised_runs(processor.tokenizer, ids, labels) == [
        "A black cat.<|im_end|>" + expected_suffix,
        "Yes, on a red sofa.<|im_end|>" + expected_suffix,
    ]
    assert (ids == processor.image_token_id).sum() == SEQ


def test_template_that_rewrites_history_is_refused(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }} {{ messages|length }}\n{% endfor %}"
    )
    processor = make_processor(tokenizer, template=None)
    with pytest.raises(ValueError, match="prefixes"):
        ConversationEncoder(processor, None).encode(MESSAGES)


def test_batch_encoding_equals_single(tokenizer):
    processor = make_processor(tokenizer, "vicuna_v1")
    encoder = ConversationEncoder(processor, "vicuna_v1")
    text_only = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    batch = encoder.encode_batch([MESSAGES, text_only])
    for conversation, (ids, labels) in zip([MESSAGES, text_only], batch):
        single_ids, single_labels = encoder.encode(conversation)
        np.testing.assert_array_equal(ids, single_ids)
        np.testing.assert_array_equal(labels, single_labels)
    assert not (batch[1][0] == processor.image_token_id).any()
