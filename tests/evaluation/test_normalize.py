"""VQA answer normalisation (EvalAI / m4c) and VQA accuracy, on cases worked out by hand."""

import pytest

from minigemini.evaluation.normalize import normalize_short_answer, normalize_vqa_answer, vqa_accuracy


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes.", "yes"),  # case and a final period
        ("yes", "yes"),
        ("The Dog", "dog"),  # article dropped
        ("an apple", "apple"),
        ("two", "2"),  # number words -> digits
        ("None", "0"),
        ("dont", "don't"),  # contraction restored
        ("isnt it", "isn't it"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("a.m.", "am"),  # other periods go
        ("hello, world", "hello world"),  # commas are dropped first
        ("1,000", "1000"),
        ("black-and-white", "black and white"),  # a hyphen inside a word becomes a space
        ("left - right", "left right"),  # ... and is deleted when it touches a space
        ("(a) cat", "cat"),  # "(" -> space, ") " deleted, then the article goes
        ("it's red", "it 's red"),  # "'s" is split off, the apostrophe is kept
        ("What?!", "what"),
        ("  Stop\tsign\n", "stop sign"),
    ],
)
def test_normalize_vqa_answer(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_vqa_accuracy_leave_one_out_by_hand():
    # 3 of 10 annotators said "2" ("two" normalises to "2"), 7 said "3".
    answers = ["2", "2", "two", "3", "3", "3", "3", "3", "3", "3"]
    # Leaving out one of the three "2"s leaves 2 matches -> 2/3; leaving out a "3" leaves 3 -> 1.
    assert vqa_accuracy("Two.", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)  # 0.9
    assert vqa_accuracy("3", answers) == pytest.approx(1.0)  # 7 matches: always >= 3 others
    # One match: leaving it out gives 0, leaving out any of the 9 others gives 1/3.
    assert vqa_accuracy("the cat", ["cat"] + ["dog"] * 9) == pytest.approx(9 * (1 / 3) / 10)  # 0.3
    assert vqa_accuracy("bird", ["cat"] + ["dog"] * 9) == 0.0
    # Four matches: every subset of nine keeps at least three.
    assert vqa_accuracy("dog", ["dog"] * 4 + ["cat"] * 6) == 1.0


def test_vqa_accuracy_with_one_reference_is_normalised_exact_match():
    assert vqa_accuracy("Yes", ["yes."]) == 1.0
    assert vqa_accuracy("The red one", "red one") == 1.0
    assert vqa_accuracy("red", ["blue"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


def test_gqa_short_answer_form():
    assert normalize_short_answer("Left.") == "left"
    assert normalize_short_answer("On the left") == "on the left"  # no article removal for GQA
