"""`mgm data mix`: recipes -> one training file, with sampling, path fixes, de-duplication and a report."""

import json
from pathlib import Path

import pytest
from PIL import Image

from minigemini.data import read_records
from minigemini.datatools.mix import load_recipe, mix
from tests.helpers.cli import data_main as main

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "data"


def _image(path: Path, colour="red") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _record(i, image=None, question="What is this?", answer="A thing."):
    record = {"id": str(i), "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
    if image is not None:
        record["image"] = image
        record["conversations"][0]["value"] = "<image>\n" + question
    return record


@pytest.fixture
def world(tmp_path):
    """Two image sources (one with old paths and a TextCaps-like part), one text source, one broken source."""
    root = tmp_path / "data"
    for i in range(6):
        _image(root / "coco" / f"{i}.jpg")
    _image(root / "textvqa" / "t.jpg")
    _image(root / "docs" / "images" / "d0.png", "white")
    (root / "docs" / "images" / "broken.png").write_bytes(b"not a png")
    instruct = [_record(i, f"coco/{i}.jpg", question=f"q{i}") for i in range(6)]
    instruct.append(_record("tc", "textvqa/t.jpg"))  # excluded by prefix
    instruct.append(_record("gone", "coco/missing.jpg"))  # missing image
    instruct.append(_record("dup", "coco/0.jpg", question="q0"))  # same image + question as record 0
    instruct.append({"id": "bad", "conversations": "nope"})  # malformed
    (root / "llava").mkdir(parents=True)
    (root / "llava" / "mix.json").write_text(json.dumps(instruct))
    # a JSONL source written with an old folder layout ("old_docs/") and a broken line
    docs = [_record("d0", "old_docs/d0.png"), _record("d1", "old_docs/broken.png")]
    lines = [json.dumps(r) for r in docs] + ["{broken json"]
    (root / "docs" / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (root / "text").mkdir()
    texts = [_record(f"t{i}", question=f"tell me {i}") for i in range(5)] + [_record("img", "coco/1.jpg")]
    (root / "text" / "lima.json").write_text(json.dumps(texts))
    recipe = {
        "name": "tiny",
        "root": str(root),
        "seed": 7,
        "output": "mix.json",
        "sources": [
            {"name": "instruct", "files": "llava/mix.json", "count": "all", "exclude_image_prefixes": ["textvqa/"]},
            {
                "name": "docs",
                "files": ["docs/*.jsonl"],
                "image_root": "docs",
                "path_fixes": [{"from": "old_docs/", "to": "images/"}],
            },
            {"name": "text", "files": "text/lima.json", "count": 3, "modality": "text"},
            {"name": "absent", "files": "nowhere/gone.json", "count": 10},
        ],
    }
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return root, path


def test_mix_samples_fixes_paths_dedups_and_reports(world, tmp_path, capsys):
    root, recipe_path = world
    out = tmp_path / "out" / "mix.json"
    assert main(["mix", str(recipe_path), "--output", str(out), "--verify-images"]) == 0
    records = json.loads(out.read_text())
    report = json.loads((tmp_path / "out" / "mix.json.report.json").read_text())
    by_source = {}
    for record in records:
        by_source.setdefault(record["source"], []).append(record)

    # instruct: 6 good records; TextCaps-like excluded, missing image, duplicate and malformed dropped
    assert sorted(r["id"] for r in by_source["instruct"]) == [str(i) for i in range(6)]
    dropped = report["sources"]["instruct"]["dropped"]
    assert {k: v["count"] for k, v in dropped.items()} == {
        "excluded": 1,
        "missing_image": 1,
        "duplicate": 1,
        "bad_record": 1,
    }
    assert "coco/missing.jpg" in dropped["missing_image"]["examples"][0]
    # docs: the prefix rewrite finds d0; the undecodable image and the broken JSON line are counted
    assert [r["image"] for r in by_source["docs"]] == ["docs/images/d0.png"]
    docs_dropped = report["sources"]["docs"]["dropped"]
    assert docs_dropped["unreadable_image"]["count"] == 1 and docs_dropped["bad_json"]["count"] == 1
    # text: 3 of the 5 text-only records, the image record filtered by modality
    assert len(by_source["text"]) == 3 and all("image" not in r for r in by_source["text"])
    assert report["sources"]["text"]["dropped"]["wrong_modality"]["count"] == 1
    # the missing source is reported, not fatal
    assert report["missing"] == ["absent"] and report["sources"]["absent"]["status"] == "missing"
    assert report["total"] == len(records) == 10
    printed = capsys.readouterr().out
    assert "absent" in printed and "missing" in printed and "short" not in printed.split("absent")[0]
    # the output trains: every record validates and its images resolve under the root
    loaded, skips = read_records(str(out), [str(root)])
    assert len(loaded) == 10 and skips.total == 0


def test_sampling_is_seeded_per_source_and_counts_are_honoured(world, tmp_path):
    _, recipe_path = world
    recipe = load_recipe(recipe_path)
    first = mix(recipe).records
    again = mix(recipe).records
    assert [r["id"] for r in first] == [r["id"] for r in again]
    recipe.seed = 8
    other = [r["id"] for r in mix(recipe).records if r["source"] == "text"]
    assert len(other) == 3
    # dropping a source does not change another source's pick
    recipe.seed = 7
    recipe.sources = [s for s in recipe.sources if s.name != "instruct"]
    assert [r["id"] for r in mix(recipe).records if r["source"] == "text"] == [
        r["id"] for r in first if r["source"] == "text"
    ]


def test_short_source_and_cross_source_duplicates(world, tmp_path):
    _, recipe_path = world
    recipe = load_recipe(recipe_path)
    recipe.sources[2].count = 50  # more than the 5 available
    # a second copy of the instruct file as another source: all its records are duplicates of the first's picks
    from minigemini.datatools.mix import Source

    recipe.sources.append(Source(name="copy", files=["llava/mix.json"], exclude_image_prefixes=["textvqa/"]))
    result = mix(recipe)
    assert result.report["sources"]["text"]["short_by"] == 45
    assert result.report["sources"]["copy"]["sampled"] == 0
    assert result.report["sources"]["copy"]["dropped"]["duplicate"]["count"] == 7  # 6 picks + the in-file duplicate
    recipe.dedup = "none"
    assert mix(recipe).report["sources"]["copy"]["sampled"] == 7  # 6 + the in-file duplicate


def test_strict_missing_source_and_bad_recipes(world, tmp_path, capsys):
    _, recipe_path = world
    out = tmp_path / "strict.json"
    assert main(["mix", str(recipe_path), "-o", str(out), "--strict"]) == 2
    assert "absent" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {name: a, files: x.json, count: -1}\n")
    with pytest.raises(ValueError, match="count"):
        load_recipe(bad)
    bad.write_text("sources:\n  - {name: a, file: x.json}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_recipe(bad)
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text(f"root: {tmp_path}\nsources:\n  - {{name: a, files: none.json}}\n")
    assert main(["mix", str(nothing), "-o", str(tmp_path / "n.json")]) == 2
    assert "no records" in capsys.readouterr().err


def test_interrupted_write_keeps_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "keep.json"
    out.write_text("[]\n")
    from minigemini.data import jsonio

    def explode(record, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jsonio.json, "dumps", explode)
    with pytest.raises(KeyboardInterrupt):
        jsonio.write_records(out, [{"a": 1}])
    assert out.read_text() == "[]\n" and list(tmp_path.glob(".keep.json.*")) == []


@pytest.mark.parametrize("name", ["stage1.yaml", "stage2.yaml"])
def test_paper_recipes_load_and_run_on_partial_data(name, tmp_path):
    recipe = load_recipe(RECIPES / name)
    assert recipe.sources and all(s.files for s in recipe.sources)
    if name == "stage2.yaml":
        counts = {s.name: s.count for s in recipe.sources}
        assert counts["docvqa_10k"] == 10000 and counts["generation_13k"] == 13000
        assert counts["chartqa_4k"] == 4000 and counts["lima_oasst2_6k"] == 6000
        assert "textvqa/" in recipe.sources[0].exclude_image_prefixes
        # only the text-only sources exist here: the recipe still runs, and reports the rest as missing
        (tmp_path / "text").mkdir()
        (tmp_path / "text" / "lima.json").write_text(json.dumps([_record(i, question=f"q{i}") for i in range(4)]))
        result = mix(recipe, root=str(tmp_path))
        assert result.report["found"] == ["lima_oasst2_6k"] and len(result.records) == 4
        assert len(result.report["missing"]) == len(recipe.sources) - 1
