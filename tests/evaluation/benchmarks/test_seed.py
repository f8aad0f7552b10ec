"""SEED-Bench (benchmarks/seed.py): llava-seed-bench.jsonl + SEED-Bench.json, exact match on image and video
questions."""

import pytest

from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_json, write_jsonl, write_png

OPTION_LETTER = "\nAnswer with the option's letter from the given choices directly."


def test_seed_exact_match_image_and_video(tmp_path):
    items = [  # question_id, image, answer, question type id, data type
        ("101669", "SEED-Bench-image/1454426_2591111986.jpg", "A", 1, "image"),
        ("101670", "SEED-Bench-image/1454426_2591111987.jpg", "B", 1, "image"),
        ("101671", "SEED-Bench-image/1454426_2591111988.jpg", "C", 3, "image"),
        ("1", "SEED-Bench-video-image/v_7Wg0iT9QZxk_0.png", "D", 10, "video"),
    ]
    for _, image, *_ in items:
        write_png(tmp_path / image)
    questions = write_jsonl(
        tmp_path / "llava-seed-bench.jsonl",
        [
            {
                "image": image,
                "text": f"Question {qid}?\nA. one\nB. two\nC. three\nD. four" + OPTION_LETTER,
                "category": {1: "Scene Understanding", 3: "Instance Attributes", 10: "Action Recognition"}[t],
                "question_id": qid,
            }
            for qid, image, _, t, _ in items
        ],
    )
    annotations = write_json(
        tmp_path / "SEED-Bench.json",
        {
            "question_type": {"Scene Understanding": 1, "Instance Attributes": 3, "Action Recognition": 10},
            "questions": [
                {"question_id": q, "answer": a, "question_type_id": t, "data_type": d, "data_id": i}
                for q, i, a, t, d in items
            ],
        },
    )
    # 101669 "A" right; 101670 "B." wrong (the script compares text == answer; unparsed); 101671 "C" right;
    # the video question "A" wrong
    answers = by_question({"101669": "A", "101670": "B.", "101671": "C", "Question 1?": "A"})
    out = tmp_path / "run"
    scripted_run("seed", questions, out, answers, annotations=str(annotations), image_dir=str(tmp_path))
    scores = score_run(out)
    assert scores["metrics"] == {
        "image_accuracy": pytest.approx(2 / 3),
        "accuracy": pytest.approx(2 / 4),
        "video_accuracy": 0.0,
    }
    assert scores["by_category"] == {"Action Recognition": 0.0, "Instance Attributes": 1.0, "Scene Understanding": 0.5}
    assert scores["counts"]["unparsed"] == 1 and scores["status"] == "complete"
