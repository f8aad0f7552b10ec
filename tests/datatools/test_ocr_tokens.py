"""`mgm data ocr`: OCR tokens appended to the first question (appendix B), cached per image, resumable."""

import json

import pytest
from PIL import Image, ImageDraw, ImageFont

from minigemini.datatools.ocr_tokens import augment
from tests.helpers.cli import data_main as main

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _sign(path, text):
    image = Image.new("RGB", (360, 120), "white")
    ImageDraw.Draw(image).text((20, 25), text, fill="black", font=ImageFont.truetype(FONT, 56))
    image.save(path)


def _record(i, image, question="What is written?"):
    return {
        "id": str(i),
        "image": image,
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": "Text."}],
    }


def test_real_ocr_appends_the_rendered_word(tmp_path, capsys):
    _sign(tmp_path / "sign.png", "PARKING")
    data = [_record(0, "sign.png"), {"id": "t", "conversations": [{"from": "human", "value": "hi"}]}]
    (tmp_path / "docs.json").write_text(json.dumps(data))
    out = tmp_path / "docs_ocr.json"
    assert main(["ocr", str(tmp_path / "docs.json"), "-o", str(out), "--no-progress"]) == 0
    records = json.loads(out.read_text())
    question = records[0]["conversations"][0]["value"]
    assert question.startswith("<image>\nWhat is written?\nReference OCR token: ")
    assert "PARKING" in question.split("Reference OCR token: ")[1]
    assert records[1] == data[1]  # text-only record passes unchanged
    assert "1 augmented" in capsys.readouterr().out


@pytest.fixture
def dataset(tmp_path):
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8), "white").save(tmp_path / f"{name}.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    records = [
        _record(0, "a.png"),
        _record(1, "b.png"),
        _record(2, "a.png", "Again?"),  # same image: read once
        _record(3, "c.png"),
        _record(4, "missing.png"),
        _record(5, "bad.png"),
        {"id": "6", "image": "c.png", "conversations": [{"from": "gpt", "value": "no question"}]},
    ]
    lines = [json.dumps(r) for r in records] + ["{oops"]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def _fake_ocr(calls, fail_on=None):
    def ocr(path):
        name = path.rsplit("/", 1)[-1]
        if name == fail_on:
            raise KeyboardInterrupt  # the user pressed Ctrl-C while this image was read
        calls.append(name)
        if name == "bad.png":
            raise OSError("cannot identify image file")
        return {"a.png": ["STOP"], "b.png": ["EXIT", "42"], "c.png": []}[name]

    return ocr


def test_bad_input_is_counted_and_the_run_resumes_after_an_interrupt(dataset):
    out = dataset / "out.jsonl"
    calls = []
    with pytest.raises(KeyboardInterrupt):
        augment(str(dataset / "data.jsonl"), str(out), ocr=_fake_ocr(calls, fail_on="c.png"), progress=False)
    assert calls == ["a.png", "b.png"] and not out.exists()

    calls.clear()
    report = augment(str(dataset / "data.jsonl"), str(out), ocr=_fake_ocr(calls), progress=False)
    assert calls == ["c.png", "bad.png"]  # a and b came from the cache
    records = [json.loads(line) for line in out.read_text().splitlines()]
    questions = {r["id"]: r["conversations"][0]["value"] for r in records}
    assert questions["0"] == "<image>\nWhat is written?\nReference OCR token: STOP"
    assert questions["1"].endswith("Reference OCR token: EXIT, 42")
    assert questions["2"] == "<image>\nAgain?\nReference OCR token: STOP"
    assert questions["3"] == "<image>\nWhat is written?"  # no text found: unchanged
    assert len(records) == 7  # the broken line cannot be written back; every record is
    problems = report["problems"]
    assert problems["bad_json"]["count"] == 1
    assert problems["missing_image"]["count"] == 1 and "missing.png" in problems["missing_image"]["examples"][0]
    assert (
        problems["unreadable_image"]["count"] == 1 and "cannot identify" in problems["unreadable_image"]["examples"][0]
    )
    assert problems["no_human_turn"]["count"] == 1
    assert report["counts"]["augmented"] == 3 and report["counts"]["images_cached"] == 2

    # a third run reads nothing, and running on its own output changes nothing
    calls.clear()
    augment(str(dataset / "data.jsonl"), str(out), ocr=_fake_ocr(calls), progress=False)
    assert calls == []
    again = dataset / "again.jsonl"
    report = augment(str(out), str(again), cache_path=str(dataset / "out.jsonl.ocr-cache.jsonl"), ocr=_fake_ocr(calls))
    assert again.read_text() == out.read_text() and report["counts"]["already_had_tokens"] == 3


def test_prefix_filter_and_retry_errors(dataset):
    out = dataset / "only_b.json"
    calls = []
    augment(str(dataset / "data.jsonl"), str(out), ocr=_fake_ocr(calls), image_prefixes=["b."], progress=False)
    assert calls == ["b.png"]
    augment(str(dataset / "data.jsonl"), str(out), ocr=_fake_ocr(calls), progress=False)
    calls.clear()
    augment(str(dataset / "data.jsonl"), str(out), ocr=_fake_ocr(calls), retry_errors=True, progress=False)
    assert calls == ["bad.png"]  # only the failed image is read again
