"""The synthetic world: seeded scenes, their supervision, picture requests, the writer and `mgm data synth`."""

import json
import re

import numpy as np
import pytest
from PIL import ImageFont

from minigemini.data.records import read_records
from minigemini.generation import GEN_TAG, extract_image_prompt
from minigemini.synthetic import world
from minigemini.synthetic.benchmark import write_synthetic_benchmark
from minigemini.synthetic.render import SceneSpec, ShapeSpec, parse_description
from minigemini.synthetic.world import (
    CELL_NAMES,
    QUESTION_TYPES,
    WORDS,
    WorldOptions,
    describe_spec,
    make_picture_request,
    make_scene,
    spec_matches,
)
from minigemini.synthetic.writer import write_world
from tests.helpers.cli import data_main


def test_same_seed_same_scene_and_different_seeds_differ():
    first, again, other = make_scene(11), make_scene(11), make_scene(12)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert first.caption == again.caption and first.questions == again.questions
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


@pytest.mark.parametrize("kind", ["shapes", "text", "chart", "document"])
def test_every_scene_kind_yields_a_caption_and_typed_questions(kind):
    for seed in range(20):
        scene = make_scene(seed, kind=kind)
        assert scene.kind == kind and scene.image.size == (192, 192)
        assert scene.caption.endswith("background.") and scene.questions
        for question in scene.questions:
            assert question.type in QUESTION_TYPES and question.answer
            assert question.text.endswith("Answer the question using a single word or phrase.")


def test_answers_agree_with_what_the_caption_says():
    for seed in range(40):
        scene = make_scene(seed)
        caption = scene.caption.lower()
        for q in scene.questions:
            if q.type in ("word", "number"):
                assert f'"{q.answer}"' in scene.caption
            elif q.type in ("chart",):
                assert f"bar of {q.answer}" in caption
            elif q.type == "document":
                word = q.text.split("next to ")[1].split(" in the")[0]
                assert f"{word} {q.answer}" in caption
            elif q.type in ("colour", "shape"):
                assert q.answer in caption
            elif q.type == "position":
                assert q.answer in CELL_NAMES and f"at the {q.answer}" in caption


def test_captions_and_requests_say_an_before_a_vowel():
    texts = [make_scene(seed, kind=kind).caption for seed in range(60) for kind in ("shapes", "chart")]
    texts += [" ".join(m["value"] for m in make_picture_request(seed).conversation()) for seed in range(200)]
    said = " ".join(texts).lower()
    assert " an orange " in said and not re.search(r"\ba [aeiou]", said)


def test_regions_mark_where_each_named_thing_is_drawn():
    from minigemini.synthetic.render import COLOURS, SHAPES

    for seed in range(40):
        scene = make_scene(seed)
        pixels = np.asarray(scene.image).astype(int)
        assert scene.regions
        for region in scene.regions:
            left, top, right, bottom = (round(v * 192) for v in region.box)
            assert 0 <= left < right <= 192 and 0 <= top < bottom <= 192
            inside = pixels[top:bottom, left:right].reshape(-1, 3)
            colours = [w for w in region.words if w in COLOURS]
            if colours and (set(region.words) & set(SHAPES) or region.words == tuple(colours)):  # a shape or a bar
                assert (np.abs(inside - COLOURS[colours[0]]).sum(axis=1) < 10).mean() > 0.2, (seed, region)
            else:  # small print (a chart's label names its bar's colour too): dark ink inside its box
                assert (inside.sum(axis=1) < 300).any(), (seed, region)
        named = {w for region in scene.regions for w in region.words}
        for q in scene.questions:  # every short answer is a region's words (positions: of one region)
            if q.type == "position":
                assert any(
                    " ".join(w for w in r.words if w in "top bottom left right centre") == q.answer
                    for r in scene.regions
                )
            else:
                assert q.answer in named, (seed, q)


def test_character_targets_spell_each_drawn_string_on_its_ink():
    from minigemini.synthetic.regions import CHARACTERS, character_targets

    found = wanted = 0
    for seed in range(24):
        scene = make_scene(seed, kind=("text", "chart", "document")[seed % 3])
        regions = [r.record() for r in scene.regions]
        drawn = [r.text for r in scene.regions if r.text]
        assert drawn and all(r.text in r.words for r in scene.regions if r.text)  # the string is what answers name
        target = character_targets(regions, 48)
        marked_chars = {CHARACTERS[c - 1] for c in target.unique().tolist() if c}
        assert marked_chars <= set("".join(drawn).lower()), seed
        found += len(marked_chars)
        wanted += len(set("".join(drawn).lower()))
        ink = np.asarray(scene.image.convert("L").resize((48, 48), resample=0)).astype(int)  # one pixel per cell
        marked = (target > 0).numpy()
        assert marked.sum() >= 2 * len("".join(drawn)), seed  # every glyph covers cells
        away = np.abs(ink - np.median(ink))  # from the background's grey
        assert away[marked].mean() > away[~marked].mean(), seed  # the marked cells hold the ink
    assert found >= 0.95 * wanted, (found, wanted)  # narrow glyphs sharing a cell may lose it to a neighbour
    lone = {"box": [0.1, 0.1, 0.5, 0.2], "words": ["ab"], "text": "ab"}
    left_half = character_targets([lone], 48)[7]  # the row through the box's middle
    assert set(left_half[5:14].tolist()) == {CHARACTERS.index("a") + 1} and left_half[4] == 0
    assert set(left_half[15:24].tolist()) == {CHARACTERS.index("b") + 1} and left_half[24] == 0


def test_string_targets_name_each_drawn_string_on_its_box():
    from minigemini.synthetic.regions import string_targets

    for seed in range(12):
        scene = make_scene(seed, kind=("text", "chart", "document")[seed % 3])
        regions = [r.record() for r in scene.regions]
        classes = {text: i + 1 for i, text in enumerate(sorted({r.text for r in scene.regions if r.text}))}
        target = string_targets(regions, 48, classes)
        assert set(target.unique().tolist()) == {0, *classes.values()}, seed  # every string gets cells
        ink = np.asarray(scene.image.convert("L").resize((48, 48), resample=0)).astype(int)
        away = np.abs(ink - np.median(ink))
        assert away[(target > 0).numpy()].mean() > away[(target == 0).numpy()].mean(), seed
    box = {"box": [0.1, 0.1, 0.5, 0.2], "words": ["ab"], "text": "ab"}
    target = string_targets([box], 48, {"ab": 3})
    assert target[5:10, 5:24].eq(3).all() and target.sum() == 3 * 5 * 19  # cells whose centres lie in the box
    thin = string_targets([{**box, "box": [0.3, 0.5, 0.3, 0.5]}], 48, {"ab": 3})
    assert thin[24, 14] == 3 and thin.sum() == 3  # a box thinner than a cell takes the cell of its middle
    with pytest.raises(ValueError, match="drawn text 'ab' is not one of the 1 strings"):
        string_targets([box], 48, {"cd": 1})


def test_generation_requests_describe_a_scene_the_renderer_reads_back():
    for seed in range(60):
        request = make_picture_request(seed)
        assert spec_matches(request.spec, request.description)
        conversation = request.conversation()
        assert conversation[0]["value"].endswith(GEN_TAG)
        assert extract_image_prompt(conversation[1]["value"]) == request.description
    wanted = SceneSpec(shapes=(ShapeSpec("circle", 2, "red", position="top left"),), background="blue")
    assert describe_spec(wanted) == "two red circles at the top left on a blue background"
    assert spec_matches(wanted, "two red circles in the upper left on a blue background")
    assert not spec_matches(wanted, "three red circles at the top left on a blue background")
    assert not spec_matches(wanted, "two red circles at the top right on a blue background")
    assert not spec_matches(wanted, "two red circles at the top left")
    assert parse_description(describe_spec(wanted)) == wanted


def test_write_world_files_are_valid_llava_data(tmp_path):
    counts = write_world(tmp_path / "w", scenes=12, generation=5, test_per_type=2, test_generation=3, seed=1)
    assert counts["scenes"] == 12 and counts["test_questions"] == 2 * len(QUESTION_TYPES)
    records, skips = read_records([tmp_path / "w" / "captions.json", tmp_path / "w" / "instructions.json"])
    assert sum(skips.counts.values()) == 0
    assert len(records) == 12 + 12 + 5
    text_only = [r for r in records if not r.images]
    assert len(text_only) == 5 and all(GEN_TAG in r.messages[0]["content"] for r in text_only)
    dialogues = [r for r in records if r.id and r.id.startswith("dialogue")]
    assert all(len(r.messages) >= 4 for r in dialogues)  # several turns each
    captions = json.loads((tmp_path / "w" / "captions.json").read_text())
    assert all(c["regions"] and all(len(r["box"]) == 4 and r["words"] for r in c["regions"]) for c in captions)
    assert any(r.get("text") for c in captions for r in c["regions"])  # drawn strings, for the character target
    rows = [json.loads(line) for line in (tmp_path / "w" / "test" / "questions.jsonl").read_text().splitlines()]
    assert sorted({row["category"] for row in rows}) == sorted(QUESTION_TYPES)
    assert all((tmp_path / "w" / "test" / row["image"]).is_file() for row in rows)
    again = tmp_path / "again"
    write_world(again, scenes=12, generation=5, seed=1)
    assert (again / "instructions.json").read_bytes() == (tmp_path / "w" / "instructions.json").read_bytes()


def test_drills_ask_every_question_of_their_types_and_leave_the_dialogues_alone(tmp_path):
    types = ("count", "position")
    counts = write_world(tmp_path / "drilled", scenes=20, generation=2, seed=3, drills=types)
    write_world(tmp_path / "plain", scenes=20, generation=2, seed=3)
    instructions = "instructions.json"
    assert (tmp_path / "drilled" / instructions).read_bytes() == (tmp_path / "plain" / instructions).read_bytes()
    assert not (tmp_path / "plain" / "drills.json").exists()
    drills = json.loads((tmp_path / "drilled" / "drills.json").read_text())
    wanted = {}
    for index, seed in enumerate(world.scene_seeds(3, 20)):
        turns = [(q.text, q.answer) for q in make_scene(seed).questions if q.type in types]
        if turns:
            wanted[f"drill-{index:06d}"] = turns
    got = {
        r["id"]: [
            (h["value"].removeprefix("<image>\n"), g["value"])
            for h, g in zip(r["conversations"][0::2], r["conversations"][1::2])
        ]
        for r in drills
    }
    assert got == wanted and counts["drills"] == len(drills) >= 5
    records, skips = read_records([tmp_path / "drilled" / "drills.json"], image_folders=[tmp_path / "drilled"])
    assert sum(skips.counts.values()) == 0 and all(len(r.images) == 1 for r in records)
    with pytest.raises(ValueError, match=r"unknown \['colours'\]"):
        write_world(tmp_path / "bad", scenes=1, generation=0, drills=("count", "colours"))
    assert not (tmp_path / "bad").exists()


def test_write_world_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_world(tmp_path, scenes=1, generation=0)
    write_world(tmp_path, scenes=1, generation=0, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "options, message",
    [
        (WorldOptions(image_size=32), "image size"),
        (WorldOptions(text_size=(4, 10)), "text size"),
        (WorldOptions(text_size=(12, 10)), "text size"),
        (WorldOptions(kinds=("maps",), kind_weights=(1.0,)), "scene kinds"),
        (WorldOptions(kind_weights=(1.0, 1.0)), "kind weights"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        write_world(tmp_path / "w", scenes=2, options=options)
    assert not (tmp_path / "w").exists()


def test_missing_fonts_name_the_debian_package(tmp_path, monkeypatch):
    def no_fonts(*args, **kwargs):
        raise OSError("cannot open resource")

    world.dejavu_font.cache_clear()
    monkeypatch.setattr(ImageFont, "truetype", no_fonts)
    try:
        with pytest.raises(OSError, match="fonts-dejavu-core"):
            write_world(tmp_path / "w", scenes=2)
        assert not (tmp_path / "w").exists()
    finally:
        world.dejavu_font.cache_clear()


def test_benchmark_writer_rotates_question_types(tmp_path):
    path = write_synthetic_benchmark(tmp_path, n=10, seed=3)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row["category"] for row in rows] == [QUESTION_TYPES[i % 8] for i in range(10)]
    assert [row["question_id"] for row in rows] == [f"synthetic-{i:05d}" for i in range(10)]
    assert any(row["answer"] in WORDS for row in rows if row["category"] == "word")


def test_mgm_data_synth_command(tmp_path, capsys):
    out = tmp_path / "w"
    assert data_main(["synth", "--output", str(out), "--scenes", "3", "--generation", "2", "--kinds", "chart"]) == 0
    assert "scenes 3" in capsys.readouterr().out
    captions = json.loads((out / "captions.json").read_text())
    assert all(record["source"] == "synthetic-chart" for record in captions)
    assert data_main(["synth", "--output", str(out), "--scenes", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert data_main(["synth", "--output", str(tmp_path / "x"), "--text-size", "3", "5"]) == 2
    assert "text size" in capsys.readouterr().err
    drilled = ["--output", str(tmp_path / "drilled"), "--scenes", "4", "--kinds", "shapes", "--drills", "count"]
    assert data_main(["synth", *drilled]) == 0
    assert "drills 4" in capsys.readouterr().out  # every shapes scene asks a count
