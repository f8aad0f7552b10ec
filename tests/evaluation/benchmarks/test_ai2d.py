"""AI2D (benchmarks/ai2d.py): lmms-lab's parquet (options list, answer index) or VLMEvalKit's TSV; accuracy
with VLMEvalKit's option reading."""

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigemini.evaluation.option_questions import score_choices
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, png_bytes, scripted_run


def rec(prediction, gold, options=("cat", "dog", "bird", "fish"), **meta):
    return {"prediction": prediction, "gold": gold, "meta": {"options": list(options), **meta}}


def test_option_reading_worked_by_hand():
    records = [
        rec("B", "B"),  # the letter
        rec("The answer is C.", "C"),  # the only option letter among the words
        rec("a dog", "B"),  # no letter: the only option whose text it holds
        rec("A or B", "A"),  # two letters: unparsed, wrong
        rec("D", "A"),  # wrong
    ]
    scores = score_choices(records)
    assert scores["metrics"]["accuracy"] == pytest.approx(3 / 5) and scores["unparsed"] == 1


def test_ai2d_parquet_run(tmp_path):
    image = {"bytes": png_bytes(), "path": None}
    table = pa.Table.from_pylist(
        [
            {"question": "Which eats plants?", "options": ["cat", "rabbit"], "answer": "1", "image": image},
            {"question": "Which is a star?", "options": ["sun", "moon", "earth"], "answer": "0", "image": image},
            {"question": "Broken?", "options": ["a", "b"], "answer": "7", "image": image},
        ]
    )
    data = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(table, data)
    asked = []
    scripted_run("ai2d", data, tmp_path / "run", by_question({"plants": "B", "star": "moon"}), asked=asked)
    assert (
        asked[0]
        == "Which eats plants?\nA. cat\nB. rabbit\nAnswer with the option's letter from the given choices directly."
    )
    scores = score_run(tmp_path / "run")
    assert scores["metrics"]["accuracy"] == 0.5 and scores["counts"]["unreadable"] == 1
    assert "'answer'" in scores["problems"]["unreadable_rows"][0]["reason"]


def test_ai2d_vlmevalkit_tsv(tmp_path):
    import base64

    data = tmp_path / "AI2D_TEST.tsv"
    with open(data, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["index", "question", "A", "B", "answer", "image"], delimiter="\t")
        writer.writeheader()
        writer.writerow({"index": 7, "question": "Which eats plants?", "A": "cat", "B": "rabbit", "answer": "B",
                         "image": base64.b64encode(png_bytes()).decode()})  # fmt: skip
    scripted_run("ai2d", data, tmp_path / "run", lambda prompt: "B")
    scores = score_run(tmp_path / "run")
    assert scores["metrics"]["accuracy"] == 1.0 and scores["counts"]["scored"] == 1
