"""The project's synthetic set (benchmarks/synthetic.py): one reference, normalised exact match."""

import json

import pytest

from minigemini.evaluation.runner import score_run
from minigemini.synthetic.benchmark import write_synthetic_benchmark
from tests.evaluation.eval_helpers import scripted_run

SUFFIX = "\nAnswer the question using a single word or phrase."


def test_synthetic_set_one_reference_normalised_exact_match(tmp_path):
    data = write_synthetic_benchmark(tmp_path / "synthetic", n=4, seed=3)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    wrong = rows[0]["question_id"]
    answers = {row["text"]: f"{row['answer'].upper()}." for row in rows}  # "YELLOW." is "yellow" once normalised
    answers[rows[0]["text"]] = "something else"
    out = tmp_path / "run"
    scripted_run("synthetic", data, out, lambda prompt: answers[prompt])
    scores = score_run(out)
    assert scores["metrics"]["accuracy"] == pytest.approx(3 / 4) and scores["status"] == "complete"
    assert len({row["question_id"] for row in rows}) == 4 and wrong == "synthetic-00000"
