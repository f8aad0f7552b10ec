"""RealWorldQA (benchmarks/realworldqa.py): xAI's parquet; option questions read as VLMEvalKit does, open ones
by lmms-eval's normalised exact match."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigemini.evaluation.benchmarks.realworldqa import open_answer
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, png_bytes, scripted_run

LETTER = "Please answer directly with only the letter of the correct option and nothing else."
NUMBER = "Please answer directly with a single word or number."


def test_open_answer_normalisation():
    assert open_answer(" Three. ") == "three"
    assert open_answer("3") == "3"


def test_realworldqa_run(tmp_path):
    image = {"bytes": png_bytes(), "path": None}
    rows = [  # question, answer, prediction
        (f"Which way is the car facing?\nA. Left\nB. Right\nC. Towards us\n{LETTER}", "C", "C."),  # right
        (f"Is the light red?\nA. Yes\nB. No\n{LETTER}", "A", "No"),  # "No" is option B's text: wrong
        (f"How many cars are there?\n{NUMBER}", "3", "3."),  # open: right after normalisation
        (f"What colour is the sign?\n{NUMBER}", "Red", "blue"),  # open: wrong
    ]
    table = pa.Table.from_pylist([{"image": image, "question": q, "answer": a} for q, a, _ in rows])
    data = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(table, data)
    asked = []
    scripted_run("realworldqa", data, tmp_path / "run", by_question({q: p for q, _, p in rows}), asked=asked)
    assert asked[0] == rows[0][0]  # the question as written, with its own instruction
    scores = score_run(tmp_path / "run")
    assert scores["metrics"]["accuracy"] == pytest.approx(2 / 4)
    assert scores["open_questions"] == 2
