"""`mgm data stats`: counts by source and modality, length percentiles, missing and unreadable images."""

import json

import numpy as np
from PIL import Image
from transformers import AutoTokenizer

from minigemini.datatools.stats import compute_stats
from tests.conftest import build_tokenizer
from tests.helpers.cli import data_main as main


def _turns(question, answer="fine"):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def _dataset(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    records = [
        {"id": "1", "source": "docs", "image": "ok.png", "conversations": _turns("<image>\nword " * 1)},
        {"id": "2", "source": "docs", "image": "broken.png", "conversations": _turns("<image>\nsome more words here")},
        {"id": "3", "source": "docs", "image": ["ok.png", "gone.png"], "conversations": _turns("<image><image>\nq")},
        {"id": "4", "source": "gen", "conversations": _turns("draw a cat <GEN>", "Sure. <h>a cat</h>")},
        {"id": "5", "conversations": _turns("read\nReference OCR token: A, B")},
        {"id": "6", "conversations": "not turns"},
    ]
    lines = [json.dumps(r) for r in records] + ["{not json", ""]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines))
    return path


def test_counts_modalities_images_and_problems(tmp_path, capsys):
    path = _dataset(tmp_path)
    stats = compute_stats([str(path)], image_tokens=10, verify_images=True)
    assert stats["records"] == 5
    assert stats["by_source"] == {"docs": 3, "(untagged)": 1, "gen": 1}
    assert stats["by_modality"] == {"text": 2, "image": 2, "multi_image": 1}
    assert stats["by_source_and_modality"]["docs"] == {"image": 2, "multi_image": 1}
    assert stats["generation_samples"] == 1 and stats["ocr_augmented"] == 1
    assert stats["images"] == {"referenced": 4, "unique": 3, "missing": 1, "unreadable": 1, "decoded": True}
    assert stats["problems"]["missing_image"]["examples"] == ["train.jsonl:3: gone.png"]
    assert stats["problems"]["bad_json"]["count"] == 1 and stats["problems"]["bad_record"]["count"] == 1
    # words without the <image> placeholders + 10 per image: record 2 is "some more words here" + "fine"
    lengths = [2 + 10, 5 + 10, 2 + 20, 7, 7]
    assert stats["length"]["unit"] == "words" and stats["length"]["max"] == max(lengths)
    assert stats["length"]["p50"] == int(np.percentile(lengths, 50))

    assert main(["stats", str(path), "--json", str(tmp_path / "s.json"), "--image-tokens", "10"]) == 0
    printed = capsys.readouterr().out
    assert "docs" in printed and "missing_image: 1" in printed and "p90" in printed
    assert json.loads((tmp_path / "s.json").read_text())["images"]["unreadable"] == 0  # not decoded without the flag


def test_token_lengths_use_the_chosen_tokenizer(tmp_path):
    build_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    data = [{"conversations": _turns("hello there " * n)} for n in (1, 5, 20)]
    (tmp_path / "d.json").write_text(json.dumps(data))
    stats = compute_stats([str(tmp_path / "d.json")], tokenizer=tokenizer)
    texts = ["\n".join(t["value"] for t in d["conversations"]) for d in data]
    expected = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    assert stats["length"]["unit"] == "tokens" and stats["length"]["max"] == max(expected)
    assert stats["length"]["min"] == min(expected) and expected[0] < expected[2]
    assert main(["stats", str(tmp_path / "d.json"), "--tokenizer", str(tmp_path / "tok")]) == 0


def test_missing_file_and_empty_data_are_one_line_errors(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("{bad\n")
    assert main(["stats", str(tmp_path / "empty.jsonl")]) == 2
    assert "no usable record" in capsys.readouterr().err


def test_plugs_into_the_mgm_parser_like_other_subcommands(tmp_path, capsys):
    """What cli.py does with SUBCOMMANDS["data"]: add_parser on its subparsers, then args.func(args)."""
    import argparse

    from minigemini.cli import datatools as command

    parser = argparse.ArgumentParser(prog="mgm")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    (tmp_path / "d.json").write_text(json.dumps([{"conversations": _turns("hi")}]))
    args = parser.parse_args(["data", "stats", str(tmp_path / "d.json")])
    assert args.func(args) == 0 and "1 records" in capsys.readouterr().out


def test_write_clean_leaves_out_and_names_every_problem_record(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)

    def record(image, question="<image>\nWhat?", answer="A thing."):
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        return {"image": image, "conversations": turns}

    rows = [
        record("ok.png"),
        record("missing.png"),
        record("corrupt.png"),
        record("ok.png", question="What, no tag?"),  # kept: training puts <image> first
        record("ok.png", answer="word " * 50),
        record("ok.png", question="<image>\n<image>\nTwo?"),
        record("../ok.png"),
        record(str(tmp_path / "ok.png")),  # absolute, where --image-folder is given
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{broken\n")
    clean = tmp_path / "clean.jsonl"
    argv = ["stats", str(data), "--verify-images", "--image-tokens", "1", "--max-length", "20"]
    argv += ["--image-folder", str(tmp_path)]
    assert main([*argv, "--write-clean", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "1 record(s) with images but no <image>" in out
    assert "bad_image_path: 2 (e.g. data.jsonl:7: image path ../ok.png leaves the image folder (../))" in out
    assert "wrote 2 record(s)" in out and "left out 7:" in out
    for where, reason in [
        ("data.jsonl:2", "missing_image"),
        ("data.jsonl:3", "unreadable_image"),
        ("data.jsonl:5", "over_max_length"),
        ("data.jsonl:6", "image_count_mismatch"),
        ("data.jsonl:7", "bad_image_path"),
        ("data.jsonl:8", "bad_image_path"),
        ("data.jsonl:9", "bad_json"),
    ]:
        assert f"  {where} ({reason})" in out
    kept = [json.loads(line) for line in clean.read_text().splitlines()]
    assert kept == [rows[0], rows[3]]


def test_shards_report_what_sharding_left_out_and_verify_their_hashes(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A thing."}]
    rows = [{"image": "ok.png", "conversations": turns}] * 6 + [{"image": "gone.png", "conversations": turns}] * 2
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    shards = tmp_path / "shards"
    assert (
        main(["shard", str(data), "-o", str(shards), "--format", "parquet", "--shard-size", "3", "--no-progress"]) == 0
    )
    capsys.readouterr()
    assert main(["stats", str(shards), "--verify-hashes"]) == 0
    out = capsys.readouterr().out
    assert "left out when sharded (manifest.json): 2\n  missing_image: 2" in out
    assert "checksum_mismatch" not in out
    shard = min(shards.glob("*.parquet"))
    content = shard.read_bytes()
    assert b"A thing." in content
    shard.write_bytes(content.replace(b"A thing.", b"A thinG.", 1))  # an answer edited, the same size
    assert main(["stats", str(shards), "--verify-hashes"]) == 0
    assert (
        f"checksum_mismatch: 1 (e.g. {shard.name}: its SHA-256 is not the one in manifest.json)"
        in capsys.readouterr().out
    )
