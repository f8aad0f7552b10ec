"""TextVQA (benchmarks/textvqa.py): questions sharing an image id, the join on (image id, question), and runs
written before that rule, re-scored."""

import json
import shutil

import pytest

from minigemini.evaluation.benchmarks import get_benchmark
from minigemini.evaluation.loader import LoadOptions
from minigemini.evaluation.runner import load_samples, score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_json, write_jsonl, write_png

SUFFIX = "\nAnswer the question using a single word or phrase."
CAMERA, COIN, SIGN = "0054c91397f2fe05", "00685bc495504d61", "0a0bc91825468c45"


def textvqa_files(root, drop_annotation=None):
    """llava_textvqa_val_v051_ocr.jsonl (question_id = the image id, shared by the two questions on CAMERA; the
    OCR line after the question, before it, or absent) and TextVQA_0.5.1_val.json."""
    for image in (CAMERA, COIN, SIGN):
        write_png(root / "train_images" / f"{image}.jpg")
    questions = write_jsonl(
        root / "llava_textvqa_val_v051_ocr.jsonl",
        [
            {
                "question_id": CAMERA,
                "image": f"{CAMERA}.jpg",
                "text": "what is the brand of this camera?\nReference OCR token: NIKON, D40" + SUFFIX,
            },
            {
                "question_id": CAMERA,
                "image": f"{CAMERA}.jpg",
                "text": "what is the model name?\nReference OCR token: NIKON, D40" + SUFFIX,
            },
            {"question_id": COIN, "image": f"{COIN}.jpg", "text": "what year is on the coin?" + SUFFIX},
            {
                "question_id": SIGN,
                "image": f"{SIGN}.jpg",
                "text": "Reference OCR token: STOP\nwhat does the sign say?" + SUFFIX,
            },
        ],
    )

    def entry(image, question, answers, number):
        return {
            "question": question,
            "image_id": image,
            "image_classes": ["Camera"],
            "image_width": 1024,
            "image_height": 768,
            "answers": answers,
            "question_tokens": question.rstrip("?").split(),
            "question_id": 34602 + number,
            "set_name": "val",
        }

    data = [
        entry(CAMERA, "what is the brand of this camera?", ["nikon"] * 10, 0),
        entry(CAMERA, "what is the model name?", ["d40"] * 2 + ["nikon d40"] * 8, 1),
        entry(COIN, "What year is on the coin?", ["1984"] * 3 + ["1985"] * 7, 2),  # the join lower-cases both
        entry(SIGN, "what does the sign say?", ["stop"] * 10, 3),
    ]
    data = [d for d in data if d["question"] != drop_annotation]
    annotations = write_json(
        root / "TextVQA_0.5.1_val.json",
        {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data},
    )
    return questions, annotations


# VQA accuracy by hand (mean over the ten leave-one-out subsets of min(1, matches / 3)):
#   "Nikon."  vs 10 x nikon                       -> 1.0
#   "D40"     vs 2 x d40 + 8 x "nikon d40"        -> (2 x 1/3 + 8 x 2/3) / 10 = 0.6
#   "1984"    vs 3 x 1984 + 7 x 1985              -> (3 x 2/3 + 7 x 1) / 10 = 0.9
#   "go"      vs 10 x stop                        -> 0.0
TEXTVQA_ANSWERS = {"brand": "Nikon.", "model name": "D40", "coin": "1984", "sign": "go"}


def test_textvqa_every_question_on_a_shared_image_id_is_scored(tmp_path):
    questions, annotations = textvqa_files(tmp_path)
    out = tmp_path / "run"
    scripted_run(
        "textvqa",
        questions,
        out,
        by_question(TEXTVQA_ANSWERS),
        annotations=str(annotations),
        image_dir=str(tmp_path / "train_images"),
    )
    scores = score_run(out)
    assert scores["status"] == "complete" and scores["counts"]["scored"] == 4
    assert scores["counts"]["questions_in_file"] == 4 and scores["counts"]["unreadable"] == 0
    assert scores["metrics"]["accuracy"] == pytest.approx((1.0 + 0.6 + 0.9 + 0.0) / 4)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    # the first question on an image keeps the image id as its qid (runs written before keep their answers)
    assert [r["qid"] for r in records] == [CAMERA, f"{CAMERA}#2", COIN, SIGN]
    assert [r["meta"]["question"] for r in records] == [
        "what is the brand of this camera?",
        "what is the model name?",
        "what year is on the coin?",
        "what does the sign say?",  # read from the line after the OCR line
    ]
    assert records[1]["gold"][:2] == ["d40", "d40"]  # joined on (image id, question), not on the shared id


def test_textvqa_question_without_annotation_is_reported_and_the_score_partial(tmp_path):
    questions, annotations = textvqa_files(tmp_path, drop_annotation="what is the model name?")
    out = tmp_path / "run"
    images = str(tmp_path / "train_images")
    scripted_run(
        "textvqa", questions, out, by_question(TEXTVQA_ANSWERS), annotations=str(annotations), image_dir=images
    )
    scores = score_run(out)
    assert scores["status"] == "partial" and scores["counts"]["unreadable"] == 1
    assert scores["counts"]["scored"] == 3 and scores["counts"]["questions_in_file"] == 4
    problem = scores["problems"]["unreadable_rows"][0]
    assert problem["where"] == "llava_textvqa_val_v051_ocr.jsonl:2"
    assert "joined on image_id + lower-cased question" in problem["reason"]


def legacy_run(tmp_path, questions, annotations):
    """An output folder as `mgm eval` wrote it before this rule: the second question on CAMERA dropped as a
    'duplicate question id', the other three answered."""
    out = tmp_path / "old-run"
    out.mkdir()
    kept = [CAMERA, COIN, SIGN]
    manifest = {
        "benchmark": "textvqa",
        "data": str(questions.resolve()),
        "annotations": str(annotations.resolve()),
        "split": None,
        "limit": None,
        "shard": [0, 1],
        "model": "old-model",
        "qids": kept,
        "invalid": [{"where": CAMERA, "reason": "duplicate question id"}],
    }
    write_json(out / "manifest.json", manifest)
    prompts = {
        CAMERA: "what is the brand of this camera?\nReference OCR token: NIKON, D40" + SUFFIX,
        COIN: "what year is on the coin?" + SUFFIX,
        SIGN: "Reference OCR token: STOP\nwhat does the sign say?" + SUFFIX,
    }
    answers = {CAMERA: "Nikon.", COIN: "1984", SIGN: "go"}
    golds = {CAMERA: ["nikon"] * 10, COIN: ["1984"] * 3 + ["1985"] * 7, SIGN: ["stop"] * 10}
    write_jsonl(
        out / "predictions.jsonl",
        [{"qid": q, "prediction": answers[q], "prompt": prompts[q], "gold": golds[q], "meta": {}} for q in kept],
    )
    return out


def test_a_run_written_before_the_fix_is_rescored_then_completed_without_asking_again(tmp_path):
    questions, annotations = textvqa_files(tmp_path)
    out = legacy_run(tmp_path, questions, annotations)
    scores = score_run(out)
    # re-read with the current loader: four questions, three answered, the dropped one now missing
    assert scores["status"] == "partial" and "older version" in scores["note"]
    assert scores["counts"]["questions_in_file"] == 4 and scores["counts"]["scored"] == 3
    assert scores["counts"]["missing_predictions"] == 1 and scores["counts"]["unreadable"] == 0
    assert scores["problems"]["missing_predictions"] == [f"{CAMERA}#2"]
    assert scores["metrics"]["accuracy"] == pytest.approx((1.0 + 0.9 + 0.0) / 3)

    asked = []  # the same `mgm eval` again: only the question the old loader dropped is asked
    images = str(tmp_path / "train_images")
    answers = by_question(TEXTVQA_ANSWERS)
    scripted_run("textvqa", questions, out, answers, asked=asked, annotations=str(annotations), image_dir=images)
    assert asked == ["what is the model name?\nReference OCR token: NIKON, D40" + SUFFIX]
    scores = score_run(out)
    assert scores["status"] == "complete" and "note" not in scores
    assert scores["metrics"]["accuracy"] == pytest.approx((1.0 + 0.6 + 0.9 + 0.0) / 4)


def test_a_run_written_before_the_fix_whose_data_is_gone_is_counted_from_its_manifest(tmp_path):
    questions, annotations = textvqa_files(tmp_path / "data")
    out = legacy_run(tmp_path, questions, annotations)
    shutil.rmtree(tmp_path / "data")
    scores = score_run(out)
    assert scores["status"] == "partial" and "not there to re-read" in scores["note"]
    assert scores["counts"]["questions_in_file"] == 4 and scores["counts"]["unreadable"] == 1
    assert scores["counts"]["scored"] == 3 and scores["metrics"]["accuracy"] == pytest.approx(1.9 / 3)


def load(bench, data, **kwargs):
    return load_samples(get_benchmark(bench), LoadOptions.create(data, **kwargs))


def test_textvqa_answers_from_the_annotation_file(tmp_path):
    write_png(tmp_path / "img1.jpg")
    (tmp_path / "q.jsonl").write_text(
        json.dumps(
            {
                "question_id": "img1",
                "image": "img1.jpg",
                "text": "What does the sign say?\nReference OCR token: STOP\nAnswer the question using a single word or phrase.",
            }
        )
        + "\n"
    )
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(
        json.dumps(
            {
                "data": [
                    {
                        "image_id": "img1",
                        "question": "what does the sign say?",
                        "question_id": 7,
                        "answers": ["stop"] * 10,
                    }
                ]
            }
        )
    )
    samples, invalid = load("textvqa", tmp_path / "q.jsonl", annotations=tmp_path / "TextVQA_0.5.1_val.json")
    assert samples[0].gold == ["stop"] * 10 and not invalid
    # the prompt already ends with the instruction: not repeated
    assert samples[0].prompt.count("Answer the question using a single word or phrase.") == 1
