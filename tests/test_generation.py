"""The <GEN>/<h> picture protocol: the caption rule, request tagging."""

import pytest

from minigemini.generation import (
    GEN_TAG,
    NEGATIVE_PROMPT,
    extract_image_prompt,
    prompt_blocks,
    request_image,
    split_answer,
    wants_image,
)


@pytest.mark.parametrize(
    "answer, prompt",
    [
        ("No picture here.", None),
        ("Sure! <h>a watercolour fox</h> Enjoy.", "a watercolour fox"),
        ("<h>first try</h> better: <h>second try</h>", "second try"),  # the last complete block wins
        ("<h>done</h> and then <h>unfinished prompt", "unfinished prompt"),  # an unclosed final block counts
        ("<h>cut short", "cut short"),
        ("<h>a <h>b</h>", "b"),  # a new <h> ends the open block
        ("<h>kept</h><h>   </h>", "kept"),  # empty blocks are skipped
        ("<h></h>", None),
        ("closing only </h>", None),
        ("<h>\n  a red circle\n on a blue background \n</h>", "a red circle\n on a blue background"),
    ],
)
def test_caption_rule(answer, prompt):
    assert extract_image_prompt(answer) == prompt


def test_prompt_blocks_and_split_answer():
    assert prompt_blocks("<h>a <h>b</h> c </h> <h>d") == ["a", "b", "d"]
    shown = split_answer("Here you go: <h>a fox in snow</h> Enjoy!")
    assert shown.text == "Here you go: Enjoy!" and shown.prompt == "a fox in snow"
    assert split_answer("plain").prompt is None and split_answer("plain").text == "plain"


def test_request_image_appends_gen_once():
    assert request_image("Draw a cat") == "Draw a cat <GEN>"
    assert request_image(request_image("Draw a cat")) == "Draw a cat <GEN>"
    assert request_image("") == GEN_TAG
    assert wants_image("x <GEN>") and not wants_image("x")
    assert NEGATIVE_PROMPT.startswith("out of frame, lowres") and NEGATIVE_PROMPT.endswith("signature")
