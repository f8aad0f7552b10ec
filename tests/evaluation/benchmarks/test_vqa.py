"""VQAv2 and GQA (benchmarks/vqa.py): leave-one-out accuracy against the annotations, GQA's exact match after
LLaVA's conversion; scores worked out by hand."""

import pytest

from minigemini.evaluation.benchmarks.vqa import score_exact_match, score_vqa
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_json, write_jsonl, write_png

SUFFIX = "\nAnswer the question using a single word or phrase."


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


def rec(prediction, gold, **meta):
    return {"qid": meta.pop("qid", str(id(meta))), "prediction": prediction, "gold": gold, "meta": meta}


def test_gqa_exact_match_and_vqa_mean():
    gqa = score_exact_match([rec("Left.", ["left"]), rec("on the left", ["left"]), rec("Yes", ["yes"])])
    assert gqa["metrics"]["accuracy"] == pytest.approx(2 / 3)
    vqa = score_vqa(
        [
            rec("Two.", ["2", "2", "two", "3", "3", "3", "3", "3", "3", "3"], category="count"),
            rec("red", ["red"], category="colour"),
        ]
    )
    assert vqa["metrics"]["accuracy"] == pytest.approx((0.9 + 1.0) / 2)
    assert vqa["by_category"] == {"colour": 1.0, "count": pytest.approx(0.9)}
