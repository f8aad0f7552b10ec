"""ChartQA (benchmarks/chartqa.py): the authors' test JSON, relaxed accuracy (5 % on numbers, else exact)."""

import pytest

from minigemini.evaluation.benchmarks.chartqa import relaxed_correctness
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_json, write_png


def test_relaxed_correctness_worked_by_hand():
    assert relaxed_correctness("12", "12.5")  # |12 - 12.5| / 12.5 = 0.04 <= 0.05
    assert not relaxed_correctness("13.2", "12.5")  # 0.7 / 12.5 = 0.056
    assert relaxed_correctness("45%", "0.45")  # a trailing % divides by 100
    assert relaxed_correctness("0", "0")  # a zero reference: exact match
    assert not relaxed_correctness("0.01", "0")
    assert relaxed_correctness(" Yes", "yes")
    assert not relaxed_correctness("yes.", "yes")


def test_chartqa_run_by_split(tmp_path):
    write_png(tmp_path / "png" / "chart1.png")
    human = write_json(
        tmp_path / "test_human.json",
        [
            {"imgname": "chart1.png", "query": "Value in 2010?", "label": "12.5"},
            {"imgname": "chart1.png", "query": "Highest bar?", "label": "Asia"},
            {"imgname": "chart1.png", "label": "3"},
        ],
    )
    asked = []
    scripted_run("chartqa", human, tmp_path / "run", by_question({"2010": "12", "bar": "Europe"}), asked=asked)
    assert asked[0] == "Value in 2010?\nAnswer the question using a single word or phrase."
    scores = score_run(tmp_path / "run")
    assert scores["metrics"]["relaxed_accuracy"] == pytest.approx(0.5)
    assert scores["by_split"] == {"human": 0.5}
    assert scores["counts"]["unreadable"] == 1  # no 'query'
    assert "query" in scores["problems"]["unreadable_rows"][0]["reason"]
