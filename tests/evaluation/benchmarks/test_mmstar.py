"""MMStar (benchmarks/mmstar.py): the authors' parquet (options written into the question); accuracy per
category and l2 category."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigemini.evaluation.option_questions import inline_options
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, png_bytes, scripted_run


def test_inline_options():
    text = "Which animal is shown?\nOptions: A: a cat, B: a dog, C: 3, 4, D: none"
    assert inline_options(text) == ["a cat", "a dog", "3, 4", "none"]
    assert inline_options("Q?\nA. one\nB. two") == ["one", "two"]
    assert inline_options("no options here") == []


def test_mmstar_run_by_category(tmp_path):
    image = {"bytes": png_bytes(), "path": None}
    rows = [  # index, question, answer, category, l2, prediction
        (0, "Which animal?\nOptions: A: cat, B: dog, C: cow, D: hen", "B", "coarse perception", "image scene", "B"),
        (1, "Which colour?\nOptions: A: red, B: blue, C: green, D: black", "A", "coarse perception", "image style",
         "blue"),
        (2, "How many?\nOptions: A: 1, B: 2, C: 3, D: 4", "C", "math", "numeric", "The answer is C"),
    ]  # fmt: skip
    table = pa.Table.from_pylist(
        [
            {"index": i, "question": q, "image": image, "answer": a, "category": c, "l2_category": l2,
             "meta_info": {"source": "x"}}
            for i, q, a, c, l2, _ in rows
        ]
    )  # fmt: skip
    data = tmp_path / "val-00000-of-00001.parquet"
    pq.write_table(table, data)
    asked = []
    scripted_run("mmstar", data, tmp_path / "run", by_question({q: p for _, q, *_, p in rows}), asked=asked)
    assert asked[0].endswith("D: hen\nAnswer with the option's letter from the given choices directly.")
    scores = score_run(tmp_path / "run")
    assert scores["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert scores["by_category"] == {"coarse perception": 0.5, "math": 1.0}
    assert scores["by_l2_category"] == {"image scene": 1.0, "image style": 0.0, "numeric": 1.0}
