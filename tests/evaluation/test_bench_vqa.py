"""TextVQA, VQAv2, GQA and the synthetic set from snippets in the layout of the files LLaVA / MGM evaluate with;
the expected scores are worked out by hand from the official rules (see minigemini/evaluation/README.md)."""

import json
import shutil

import pytest

from minigemini.evaluation.runner import score_run
from minigemini.synthetic.benchmark import write_synthetic_benchmark
from tests.eval_helpers import by_question, scripted_run, write_json, write_jsonl, write_png

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


def test_vqav2_annotations_leave_one_out_and_unique_ids(tmp_path):
    for image in (262148, 393225):
        write_png(tmp_path / "val2014" / f"COCO_val2014_{image:012d}.jpg")

    def question(qid, image, text):
        return {
            "question_id": qid,
            "image": f"COCO_val2014_{image:012d}.jpg",
            "text": text + SUFFIX,
            "category": "default",
        }

    questions = write_jsonl(
        tmp_path / "llava_vqav2_mscoco_val2014.jsonl",
        [
            question(262148000, 262148, "Where is he looking?"),
            question(393225000, 393225, "How many dogs are there?"),
            question(393225000, 393225, "How many dogs are there?"),  # a repeated id: the file is wrong
            question(393225001, 393225, "What colour is the frisbee?"),  # no annotation
        ],
    )

    def annotation(qid, image, answers):
        return {
            "question_type": "what",
            "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
            "image_id": image,
            "answer_type": "other",
            "question_id": qid,
        }

    annotations = write_json(
        tmp_path / "v2_mscoco_val2014_annotations.json",
        {
            "info": {},
            "license": {},
            "data_subtype": "val2014",
            "annotations": [
                annotation(262148000, 262148, ["down"] * 4 + ["at table"] * 3 + ["skateboard"] * 2 + ["table"]),
                annotation(393225000, 393225, ["2"] * 10),
            ],
        },
    )
    out = tmp_path / "run"
    answers = by_question({"looking": "At the table.", "dogs": "Two"})
    scripted_run("vqav2", questions, out, answers, annotations=str(annotations), image_dir=str(tmp_path / "val2014"))
    scores = score_run(out)
    # "At the table." -> "at table" (period, article dropped): 3 matches -> (3 x 2/3 + 7 x 1) / 10 = 0.9;
    # "Two" -> "2": 10 matches -> 1.0
    assert scores["metrics"]["accuracy"] == pytest.approx((0.9 + 1.0) / 2)
    assert scores["counts"]["scored"] == 2 and scores["counts"]["unreadable"] == 2
    reasons = sorted(row["reason"] for row in scores["problems"]["unreadable_rows"])
    assert reasons == ["duplicate question id", "question id 393225001 is not in v2_mscoco_val2014_annotations.json"]


def test_gqa_exact_match_after_llavas_conversion(tmp_path):
    for image in ("n161313", "n235859", "n308578"):
        write_png(tmp_path / "images" / f"{image}.jpg")
    questions = write_jsonl(
        tmp_path / "llava_gqa_testdev_balanced.jsonl",
        [
            {"question_id": "201307251", "image": "n161313.jpg", "text": "Is it overcast?" + SUFFIX},
            {"question_id": "201640614", "image": "n235859.jpg", "text": "Which side is the cup on?" + SUFFIX},
            {"question_id": "202225914", "image": "n308578.jpg", "text": "On which side is the man?" + SUFFIX},
        ],
    )

    def entry(question, image, answer):
        return {
            "semantic": [],
            "entailed": [],
            "equivalent": [],
            "question": question,
            "imageId": image,
            "isBalanced": True,
            "groups": {"global": None, "local": "10c-sky_overcast"},
            "answer": answer,
            "semanticStr": "",
            "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
            "types": {"detailed": "weatherVerify", "semantic": "global", "structural": "verify"},
            "fullAnswer": f"It is {answer}.",
        }

    annotations = write_json(
        tmp_path / "testdev_balanced_questions.json",
        {
            "201307251": entry("Is it overcast?", "n161313", "no"),
            "201640614": entry("Which side is the cup on?", "n235859", "left"),
            "202225914": entry("On which side is the man?", "n308578", "right"),
        },
    )
    out = tmp_path / "run"
    # convert_gqa_for_eval.py: text.rstrip('.').lower(); GQA's eval.py: prediction == answer.  "The left" is
    # wrong there, though VQA normalisation (articles dropped) would accept it.
    answers = by_question({"overcast": "No.", "cup": "The left", "man": "Right"})
    scripted_run("gqa", questions, out, answers, annotations=str(annotations))
    scores = score_run(out)
    assert scores["metrics"]["accuracy"] == pytest.approx(2 / 3) and scores["status"] == "complete"


def test_synthetic_set_one_reference_normalised_exact_match(tmp_path):
    data = write_synthetic_benchmark(tmp_path / "synthetic", n=4, seed=3)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    wrong = rows[0]["question_id"]
    answers = {row["text"]: f"{row['answer'].upper()}." for row in rows}  # "YELLOW." is "yellow" once normalised
    answers[rows[0]["text"]] = "something else"
    out = tmp_path / "run"
    scripted_run("synthetic", data, out, lambda prompt: answers[prompt])
    scores = score_run(out)
    assert scores["metrics"]["accuracy"] == pytest.approx(3 / 4) and scores["status"] == "complete"
    assert len({row["question_id"] for row in rows}) == 4 and wrong == "synthetic-00000"
