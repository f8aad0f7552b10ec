"""The one loader skeleton (loader.load_rows) and the registry of benchmark modules."""

import json

import pytest

from minigemini.evaluation.benchmarks import BENCHMARKS, MODULES, get_benchmark
from minigemini.evaluation.loader import LoadOptions, llava_fields, load_rows
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable


def test_rows_become_samples_and_what_cannot_becomes_an_unreadable_row(tmp_path):
    lines = [{"n": 1}, {"n": 2}, "not json", {"n": 3}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))

    def to_samples(where, row):
        if row["n"] == 2:
            raise Unreadable("two is not a question")
        return [Sample(f"{row['n']}-{k}", "q", [], None) for k in range(row["n"])]  # a list: several questions

    items = list(load_rows(LoadOptions.create(data), to_samples))
    assert [i.qid if isinstance(i, Sample) else (i.where, i.reason[:10]) for i in items] == [
        "1-0",
        ("rows.jsonl:2", "two is not"),
        ("rows.jsonl:3", "not valid "),
        "3-0",
        "3-1",
        "3-2",
    ]
    given = list(
        load_rows(
            LoadOptions.create(data), lambda where, row: row["n"], rows=[("a", {"n": 7}), ("b", InvalidRow("b", "x"))]
        )
    )
    assert given == [7, InvalidRow("b", "x")]


def test_llava_fields_need_an_id_and_a_question():
    assert llava_fields({"question_id": 3, "text": "<image>\nWhat?", "image": "a.png"}) == ("3", "What?", "a.png")
    with pytest.raises(Unreadable, match="no question text"):
        llava_fields({"question_id": 3, "text": "<image>"})


def test_every_benchmark_module_is_registered_once_in_order():
    declared = [b.name for module in MODULES for b in module.BENCHMARKS]
    assert declared == list(BENCHMARKS) and len(set(declared)) == len(declared)
    assert declared[:3] == ["textvqa", "vqav2", "gqa"] and declared[-1] == "synthetic"
    assert get_benchmark("MMBench") is BENCHMARKS["mmbench"]
