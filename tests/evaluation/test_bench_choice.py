"""MMBench, ScienceQA and SEED-Bench from snippets in the layout of the files LLaVA / MGM evaluate with (MMBench's
circular TSV, llava_test_CQM-A.json + problems.json, llava-seed-bench.jsonl + SEED-Bench.json); scores worked
out by hand from the official rules, including the answers on which parsers disagree."""

import base64
import csv

import pytest

from minigemini.evaluation.runner import score_run
from tests.eval_helpers import by_question, png_bytes, scripted_run, write_json, write_jsonl, write_png

OPTION_LETTER = "\nAnswer with the option's letter from the given choices directly."
COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source", "l2-category"]


def mmbench_tsv(path):
    """MMBench_DEV_EN.tsv with its CircularEval copies: index i + k * 1e6 holds the options rotated k times (and
    the answer letter moved with them); a copy's image cell is the index of the row holding the image."""
    image = base64.b64encode(png_bytes((40, 90, 200), (16, 16))).decode()
    questions = [
        (0, "What is the main object in the image?", ["teddy bear", "rabbit", "cat", "dog"], "A", "image_scene"),
        (1, "Which colour is the car?", ["red", "green", "blue", "yellow"], "C", "attribute_recognition"),
        (2, "Is the light on?", ["yes", "no"], "B", "attribute_recognition"),
    ]
    rows = []
    for index, question, options, answer, category in questions:
        for k in range(len(options)):
            rotated = options[k:] + options[:k]
            cells = dict(zip("ABCD", rotated + [""] * (4 - len(rotated))))
            rows.append(
                {
                    "index": index + k * 1_000_000,
                    "question": question,
                    "hint": "nan",
                    **cells,
                    "answer": "ABCD"[(options.index(dict(zip("ABCD", options))[answer]) - k) % len(options)],
                    "category": category,
                    "image": image if k == 0 else str(index),
                    "source": "MMBench",
                    "l2-category": "perception",
                }
            )
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_mmbench_circular_evaluation_by_hand(tmp_path):
    tsv = mmbench_tsv(tmp_path / "MMBench_DEV_EN.tsv")
    # object (gold A, D, C, B over the rotations): "A"; "D. teddy bear"; "a cute teddy bear" (no letter: the
    # text of the one option it names, rotation 2's C -- a letter-only reader would fail it); "B" -> solved.
    # car (gold C, B, A, D): rotation 2 says "A or B" (two letters, no option text): unparsed -> not solved.
    # light (two options, gold B, A): "B", "A" -> solved.
    answers = {
        ("main object", "A. teddy bear"): "A",
        ("main object", "A. rabbit"): "D. teddy bear",
        ("main object", "A. cat"): "a cute teddy bear",
        ("main object", "A. dog"): "B",
        ("car", "A. red"): "C",
        ("car", "A. green"): "B",
        ("car", "A. blue"): "A or B",
        ("car", "A. yellow"): "D",
        ("light", "A. yes"): "B",
        ("light", "A. no"): "A",
    }

    def answer(prompt):
        return next(text for (topic, first), text in answers.items() if topic in prompt and first in prompt)

    out = tmp_path / "run"
    scripted_run("mmbench", tsv, out, answer)
    scores = score_run(out)
    assert scores["counts"]["questions_in_file"] == 10 and scores["counts"]["scored"] == 10
    assert scores["questions"] == 3 and scores["incomplete_questions"] == 0
    assert scores["metrics"]["circular_accuracy"] == pytest.approx(2 / 3)
    assert scores["metrics"]["single_round_accuracy"] == 1.0  # every first rotation is right
    assert scores["by_category"] == {"attribute_recognition": 0.5, "image_scene": 1.0}
    assert scores["counts"]["unparsed"] == 1 and scores["status"] == "complete"


def scienceqa_files(root):
    """llava_test_CQM-A.json (the human turn: Context/Question/Options, <image> at the end when there is one;
    the gpt turn "The answer is X.") and ScienceQA's problems.json (answer = option index)."""
    problems = {
        "5": (["granite", "sandstone", "basalt"], 1, "image.png", "natural science"),
        "8": (["yes", "no"], 0, None, "social science"),
        "13": (["Asia", "Africa", "Europe", "Oceania"], 2, "image.png", "social science"),
        "21": (["weather", "climate"], 1, None, "natural science"),
        "34": (["true", "false"], 0, "image.png", "language science"),
    }
    rows = []
    for pid, (choices, answer, image, _) in problems.items():
        options = " ".join(f"({'ABCDE'[i]}) {c}" for i, c in enumerate(choices))
        human = f"Context: N/A\nQuestion: Which one?\nOptions: {options}"
        row = {
            "id": pid,
            "conversations": [
                {"from": "human", "value": human + ("\n<image>" if image else "")},
                {"from": "gpt", "value": f"The answer is {'ABCDE'[answer]}."},
            ],
        }
        if image:
            row["image"] = f"{pid}/{image}"
            write_png(root / "images" / "test" / pid / image)
        rows.append(row)
    questions = write_json(root / "llava_test_CQM-A.json", rows)
    annotations = write_json(
        root / "problems.json",
        {
            pid: {"question": "Which one?", "choices": c, "answer": a, "image": i, "subject": s, "split": "test"}
            for pid, (c, a, i, s) in problems.items()
        },
    )
    return questions, annotations


def test_scienceqa_letters_as_eval_science_qa_reads_them(tmp_path):
    questions, annotations = scienceqa_files(tmp_path)
    answers = {
        "granite": "The answer is B, no wait. The answer is C.",  # gold B: two matches -> FAILED (a first-match
        # reader says B, right; the escaped-period variant says C)
        "(A) yes": "A",  # gold A: right
        "Asia": "C. Europe",  # gold C: "X. " at the start -> right
        "weather": "The answer is B",  # gold B: the pattern needs a character after the letter -> FAILED
        "true": "C",  # gold A: a letter beyond the two options -> wrong
    }
    out = tmp_path / "run"
    images = str(tmp_path / "images" / "test")
    scripted_run("scienceqa", questions, out, by_question(answers), annotations=str(annotations), image_dir=images)
    scores = score_run(out)
    assert scores["metrics"]["accuracy"] == pytest.approx(2 / 5)
    assert scores["metrics"]["image_accuracy"] == pytest.approx(1 / 3)  # 5, 13, 34 have an image; 13 right
    assert scores["by_category"] == {"language science": 0.0, "natural science": 0.0, "social science": 1.0}
    assert scores["counts"]["unparsed"] == 3 and scores["status"] == "complete"


def test_scienceqa_problem_missing_from_problems_json_is_reported(tmp_path):
    questions, annotations = scienceqa_files(tmp_path)
    write_json(annotations, {"5": {"choices": ["granite", "sandstone", "basalt"], "answer": 1}})
    out = tmp_path / "run"
    scripted_run("scienceqa", questions, out, lambda prompt: "B", annotations=str(annotations), image_dir=str(tmp_path))
    scores = score_run(out)
    assert scores["counts"]["unreadable"] == 4 and scores["status"] == "partial"
    assert scores["problems"]["unreadable_rows"][0]["reason"] == "problem 8 is not in problems.json"


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
