"""HallusionBench (benchmarks/hallusionbench.py): the authors' JSON; aAcc / fAcc / qAcc."""

import pytest

from minigemini.evaluation.benchmarks.hallusionbench import read_yes_no
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_json, write_png


def test_yes_no_reading():
    assert read_yes_no("Yes, it is.") == "yes"
    assert read_yes_no("No.") == "no"
    assert read_yes_no("Yes and no") is None
    assert read_yes_no("Nothing") is None  # a word, not "no"


def test_hallusionbench_three_accuracies_worked_by_hand(tmp_path):
    write_png(tmp_path / "hallusion_bench" / "VD" / "chart" / "0_0.png")
    write_png(tmp_path / "hallusion_bench" / "VD" / "chart" / "0_1.png")
    write_png(tmp_path / "hallusion_bench" / "VS" / "map" / "1_1.png")
    rows = [  # category, subcategory, set, figure, question, gold, prediction
        ("VD", "chart", 0, 0, 0, "1", "Yes, it is."),  # right
        ("VD", "chart", 0, 1, 0, "0", "yes"),  # wrong
        ("VD", "chart", 0, 0, 1, "0", "No."),  # right
        ("VS", "map", 1, 0, 0, "1", "I cannot tell."),  # unparsed, but VS without its figure: right
        ("VS", "map", 1, 1, 0, "0", "No"),  # right
    ]
    data = write_json(
        tmp_path / "HallusionBench.json",
        [
            {
                "category": c, "subcategory": s, "visual_input": "0" if c == "VS" and f == 0 else "1",
                "set_id": str(n), "figure_id": str(f), "question_id": str(q),
                "question": f"Question {c}{n}{f}{q}?", "gt_answer": g,
                "filename": None if c == "VS" and f == 0 else f"./hallusion_bench/{c}/{s}/{n}_{f}.png",
            }
            for c, s, n, f, q, g, _ in rows
        ],
    )  # fmt: skip
    answers = by_question({f"Question {c}{n}{f}{q}?": p for c, _, n, f, q, _, p in rows})
    scripted_run("hallusionbench", data, tmp_path / "run", answers)
    scores = score_run(tmp_path / "run")
    # aAcc: 4 of 5.  fAcc over VD_chart_0_0 (both right), VD_chart_0_1 (wrong), VS_map_1_1 (right); VS figure 0
    # left out: 2/3.  qAcc over VD_chart_0_q0 (right, wrong), VD_chart_0_q1 (right), VS_map_1_q0 (right, right): 2/3
    assert scores["metrics"] == {"aAcc": 0.8, "fAcc": pytest.approx(2 / 3), "qAcc": pytest.approx(2 / 3)}
    assert scores["counts"]["unparsed"] == 1 and scores["counts"]["scored"] == 5
