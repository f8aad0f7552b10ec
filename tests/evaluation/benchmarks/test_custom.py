"""`--bench custom`: the user's held-out JSONL/CSV (or LLaVA records) with answers, VQA accuracy or exact match."""

from __future__ import annotations

import json

from minigemini.evaluation.benchmarks import get_benchmark
from minigemini.evaluation.loader import LoadOptions
from minigemini.evaluation.samples import InvalidRow


def test_custom_reads_simple_rows_and_llava_records_and_scores(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    rows = [
        {"id": "q1", "image": "a.png", "question": "What colour?", "answer": "Red"},
        {
            "image": "a.png",
            "conversations": [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "2"}],
        },
        {"question": "No answer here"},
    ]
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    bench = get_benchmark("custom")
    items = list(bench.load(LoadOptions.create(data)))
    samples = [item for item in items if not isinstance(item, InvalidRow)]
    assert [(s.qid, s.prompt, s.gold) for s in samples] == [
        ("q1", "What colour?", ["Red"]),
        ("held_out.jsonl:2", "How many?", ["2"]),
    ]
    assert len(samples[0].images) == 1
    (invalid,) = [item for item in items if isinstance(item, InvalidRow)]
    assert "no answer" in invalid.reason
    records = [{"prediction": "red.", "gold": ["Red"]}, {"prediction": "two", "gold": ["2"]}]
    assert bench.score(records)["metrics"]["accuracy"] == 1.0  # VQA normalisation: "two" is "2"
    assert get_benchmark("custom-exact").score(records)["metrics"]["accuracy"] == 0.5
