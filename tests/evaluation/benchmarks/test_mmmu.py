"""MMMU (benchmarks/mmmu.py): the hub parquet, and eval_utils.py's parsing of multiple-choice and open answers
worked out by hand."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigemini.evaluation.benchmarks.mmmu import (
    mmmu_correct,
    parse_multi_choice_response,
    parse_open_response,
    score_mmmu,
)
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, png_bytes, scripted_run


def mmmu_folder(root):
    """MMMU/<Subject>/validation-00000-of-00001.parquet with the hub's columns."""
    image = {"bytes": png_bytes((10, 10, 10)), "path": None}

    def row(qid, question, options, answer, question_type):
        return {
            "id": qid,
            "question": question,
            "options": options,
            "explanation": "",
            "image_1": image,
            "image_2": None,
            "img_type": "['Paintings']",
            "answer": answer,
            "topic_difficulty": "Easy",
            "question_type": question_type,
            "subfield": "Art History",
        }

    subjects = {
        "Art": [
            row(
                "validation_Art_1",
                "<image 1> Which style?",
                "['Baroque', 'Cubism', 'Impressionism']",
                "B",
                "multiple-choice",
            ),
            row(
                "validation_Art_2",
                "<image 1> Which period?",
                "['Modern', 'Gothic', 'Renaissance']",
                "A",
                "multiple-choice",
            ),
        ],
        "Math": [
            row("validation_Math_3", "<image 1> Solve for x.", "[]", "12", "open"),
            row("validation_Math_4", "<image 1> Give the value.", "[]", "['24/7', '3.429']", "open"),
            row("validation_Math_5", "<image 1> Which city?", "[]", "Paris", "open"),
        ],
    }
    for subject, rows in subjects.items():
        (root / subject).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / subject / "validation-00000-of-00001.parquet")
    return root


def test_mmmu_rules_by_hand(tmp_path):
    data = mmmu_folder(tmp_path / "MMMU")
    answers = {
        "Which style?": "(B) Cubism",  # gold B: bracketed letter -> right
        "Which period?": "It is either A or C, I would say C",  # gold A: bare letters, the last one (C) -> wrong
        "Solve for x.": "x = 12",  # "=" in the last sentence -> 12 -> right
        "Give the value.": "The answer is 3.429",  # 3.43 == round(3.429, 2) of the list's second answer -> right
        "Which city?": "The result is \nParis",  # only "is" is kept (see below) -> wrong
    }
    out = tmp_path / "run"
    scripted_run("mmmu", data, out, by_question(answers), split="validation")
    scores = score_run(out)
    assert scores["metrics"]["accuracy"] == pytest.approx(3 / 5)
    assert scores["by_subject"] == {"Art": 0.5, "Math": pytest.approx(2 / 3)}
    assert scores["counts"]["unparsed"] == 0 and scores["status"] == "complete"


def test_mmmu_open_answer_key_when_a_tail_is_empty():
    # eval_utils.py: in "the result is " the indicator "is " leaves an empty tail, which the next indicator
    # ("result ") replaces with "is"; the candidates are "is" only, not the whole response.
    assert parse_open_response("The result is \nParis") == ["is"]
    assert not mmmu_correct("open", "Paris", parse_open_response("The result is \nParis"))


def rec(prediction, gold, **meta):
    return {"qid": meta.pop("qid", str(id(meta))), "prediction": prediction, "gold": gold, "meta": meta}


def test_mmmu_multiple_choice_parsing():
    letters, index2ans = ["A", "B", "C", "D"], {"A": "red apple", "B": "green pear", "C": "plum", "D": "fig"}
    assert parse_multi_choice_response("The answer is (B).", letters, index2ans) == ("B", True)
    assert parse_multi_choice_response("B", letters, index2ans) == ("B", True)
    # several bare letters: the last one wins
    assert parse_multi_choice_response("It is C or D, final D", letters, index2ans) == ("D", True)
    # more than five words and an option's text
    assert parse_multi_choice_response("The picture shows a red apple on a table", letters, index2ans) == ("A", True)
    letter, parsed = parse_multi_choice_response("hmm", letters, index2ans)
    assert letter in letters and parsed is False  # MMMU's random fallback, flagged


def test_mmmu_open_parsing_and_matching():
    candidates = parse_open_response("The result is 3.50 dollars")
    assert 3.5 in candidates and "3.50 dollars" in candidates
    assert mmmu_correct("open", "3.5", candidates)
    assert mmmu_correct("open", ["7", "3.50"], candidates)
    assert not mmmu_correct("open", "4", candidates)
    assert mmmu_correct("open", "paris", parse_open_response("So the capital is Paris."))


def test_mmmu_score_counts_random_fallbacks():
    records = [
        {
            "qid": "validation_Art_1",
            "prediction": "(A)",
            "gold": "A",
            "meta": {
                "question_type": "multiple-choice",
                "options": ["x", "y"],
                "subject": "Art",
                "domain": "Art and Design",
            },
        },
        {
            "qid": "validation_Math_1",
            "prediction": "x = 12",
            "gold": "12",
            "meta": {"question_type": "open", "options": [], "subject": "Math", "domain": "Science"},
        },
        {
            "qid": "validation_Math_2",
            "prediction": "no idea",
            "gold": "B",
            "meta": {
                "question_type": "multiple-choice",
                "options": ["1", "2", "3"],
                "subject": "Math",
                "domain": "Science",
            },
        },
    ]
    result = score_mmmu(records)
    assert result["unparsed"] == 1
    assert result["by_subject"]["Art"] == 1.0
    assert result["by_domain"]["Art and Design"] == 1.0
    # the random pick is seeded: the score is reproducible
    assert score_mmmu(records)["metrics"] == result["metrics"]
