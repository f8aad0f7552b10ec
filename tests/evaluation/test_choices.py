"""Reading an option letter out of an answer (choices.py): VLMEvalKit's can_infer, as MMBench matches answers."""

import pytest

from minigemini.evaluation.choices import infer_option


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("B", "B"),
        ("I choose B.", "B"),
        ("(C) dog", "C"),
        ("**D**", "D"),
        ("a cute teddy bear", "A"),  # the text of option A
        ("B or C", None),  # two letters, no text
        ("spider", None),
        ("Cannot determine the answer", "Z"),
    ],
)
def test_mmbench_answer_matching(answer, letter):
    choices = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}
    assert infer_option(answer, choices) == letter
