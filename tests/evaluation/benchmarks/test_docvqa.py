"""DocVQA (benchmarks/docvqa.py): the challenge's JSON, scored with ANLS (Biten et al. 2019, threshold 0.5)."""

import pytest

from minigemini.evaluation.benchmarks.docvqa import anls, levenshtein
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_json, write_png


def test_anls_worked_by_hand():
    assert levenshtein("kitten", "sitting") == 3
    # "mrs. smith" vs "mr. smith": one deletion over the longer length 10 -> 1 - 0.1
    assert anls(" Mrs. Smith ", ["mr. smith"]) == pytest.approx(0.9)
    # the best reference counts: 1998 (1/4 -> 0.75) or "1999." (1/5 -> 0.8)
    assert anls("1999", ["1998", "1999."]) == pytest.approx(0.8)
    # NL = 2/4 = 0.5 is not below the threshold: 0, not 0.5
    assert anls("ab", ["abcd"]) == 0.0
    assert anls("abc", ["xyz"]) == 0.0


def test_docvqa_run_scores_anls_per_question_type(tmp_path):
    write_png(tmp_path / "documents" / "doc1.png")
    rows = [
        {"questionId": 1, "question": "Who signed?", "image": "documents/doc1.png", "docId": 1,
         "answers": ["mr. smith"], "question_types": ["handwritten"]},
        {"questionId": 2, "question": "What year?", "image": "documents/doc1.png", "docId": 1,
         "answers": ["1998", "1999."], "question_types": ["layout"]},
        {"questionId": 3, "question": "What code?", "image": "documents/doc1.png", "docId": 1,
         "answers": ["abcd"], "question_types": ["layout"]},
        {"questionId": 4, "question": "Broken?", "image": "documents/doc1.png", "answers": "not a list"},
    ]  # fmt: skip
    data = write_json(tmp_path / "val_v1.0.json", {"dataset_name": "docvqa", "data": rows})
    asked = []
    answers = by_question({"Who": "Mrs. Smith", "year": "1999", "code": "ab"})
    scripted_run("docvqa", data, tmp_path / "run", answers, asked=asked)
    assert asked[0] == "Who signed?\nAnswer the question using a single word or phrase."
    scores = score_run(tmp_path / "run")
    assert scores["metrics"]["anls"] == pytest.approx((0.9 + 0.8 + 0.0) / 3)
    assert scores["by_question_type"] == {"handwritten": pytest.approx(0.9), "layout": pytest.approx(0.4)}
    assert scores["counts"]["unreadable"] == 1
    assert "val_v1.0.json[3]" in str(scores["problems"]["unreadable_rows"]) and "answers" in str(
        scores["problems"]["unreadable_rows"]
    )


def test_a_file_in_another_format_is_one_line_naming_the_file_and_the_field(tmp_path):
    from minigemini.evaluation.samples import EvalError

    data = write_json(tmp_path / "ChartQA.json", [{"imgname": "a.png", "query": "Q?", "label": "1"}])
    with pytest.raises(EvalError, match=r"^ChartQA.json: no row is a docvqa question .*'questionId'"):
        scripted_run("docvqa", data, tmp_path / "run", lambda prompt: "x")
