"""`mgm data convert`: a table of image, question, answer -> LLaVA records; bad input gets one clear line each."""

from __future__ import annotations

import json

from minigemini.data.records import read_records
from tests.helpers.cli import data_main as main


def test_csv_and_jsonl_tables_become_llava_records(tmp_path, capsys):
    table = tmp_path / "qa.csv"
    table.write_text(
        "\ufeffimage,question,answer\n"  # a byte-order mark, as spreadsheet programs write
        "a.png,What colour?,Red\n"
        "../secret.png,Escape?,No\n"
        "/abs/b.png,Absolute?,No\n"
        "a.png;b.png,Same?,Yes\n"
        ",Text only?,Sure\n",
        encoding="utf-8",
    )
    out = tmp_path / "train.jsonl"
    assert main(["convert", str(table), "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "left out qa.csv:3: image path ../secret.png leaves the image folder (../) (bad_record)"
    assert printed[1].startswith("left out qa.csv:4: absolute image path /abs/b.png: give it relative")
    assert printed[2] == f"wrote 3 record(s) to {out}; left out 2"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0] == {
        "id": "qa.csv:2",
        "image": "a.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red"}],
    }
    assert records[1]["image"] == ["a.png", "b.png"] and records[1]["conversations"][0]["value"].count("<image>") == 2
    assert "image" not in records[2]
    # a JSONL table: image as a string in some rows and a list in others (one image: written as a path)
    rows = [{"image": "a.png", "question": "Q1", "answer": "A1"}, {"image": ["a.png"], "question": "Q2", "answer": 2}]
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["convert", str(jsonl), "-o", str(tmp_path / "t2.json")]) == 0
    converted = json.loads((tmp_path / "t2.json").read_text())
    assert [r["image"] for r in converted] == ["a.png", "a.png"] and converted[1]["conversations"][1]["value"] == "2"


def test_a_csv_without_an_answer_column_is_one_line(tmp_path, capsys):
    table = tmp_path / "qa.csv"
    table.write_text("image,question\na.png,What?\n")
    assert main(["convert", str(table), "-o", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = (
        f"mgm data convert: error: {table}: no answer column (accepted names: answer, response, output, caption; "
        "its columns: image, question)"
    )
    assert err == [expected]


def test_training_reads_a_json_file_with_a_byte_order_mark(tmp_path):
    record = {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
    for name, text in [("a.json", json.dumps([record])), ("b.jsonl", json.dumps(record) + "\n")]:
        (tmp_path / name).write_text("\ufeff" + text, encoding="utf-8")
        records, skips = read_records(str(tmp_path / name))
        assert len(records) == 1 and not skips.counts
