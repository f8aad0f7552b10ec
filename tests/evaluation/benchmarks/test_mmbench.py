"""MMBench (benchmarks/mmbench.py): the circular TSV, rotations made when the file has none, circular
accuracy by hand, and the judge for answers the rules cannot place."""

import base64
import csv

import pytest

from minigemini.evaluation.benchmarks import get_benchmark
from minigemini.evaluation.benchmarks.mmbench import score_mmbench
from minigemini.evaluation.loader import LoadOptions
from minigemini.evaluation.runner import load_samples, score_run
from tests.evaluation.eval_helpers import JudgeServer, make_judge, png_bytes, scripted_run, write_mmbench_tsv

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


def rec(prediction, gold, **meta):
    return {"qid": meta.pop("qid", str(id(meta))), "prediction": prediction, "gold": gold, "meta": meta}


def _circular(group, answers, golds, category="attribute"):
    options = ["red", "green", "blue", "yellow"]
    out = []
    for shift, (answer, gold) in enumerate(zip(answers, golds)):
        rotated = options[shift:] + options[:shift]
        out.append(
            {
                "qid": f"{group + shift * 1_000_000}",
                "prediction": answer,
                "gold": gold,
                "meta": {
                    "group": group,
                    "round": shift,
                    "circular_size": 4,
                    "options": rotated,
                    "question": "Which colour?",
                    "category": category,
                    "l2_category": "perception",
                },
            }
        )
    return out


def test_mmbench_circular_one_wrong_shift_fails_the_question():
    # Correct option "blue": letters C, B, A, D over the four rotations.
    solved = _circular(7, ["C", "B", "A", "D"], ["C", "B", "A", "D"])
    one_wrong = _circular(8, ["C", "B", "B", "D"], ["C", "B", "A", "D"])  # third rotation wrong
    result = score_mmbench(solved + one_wrong)
    assert result["metrics"]["circular_accuracy"] == 0.5
    assert result["metrics"]["single_round_accuracy"] == 1.0  # the first rotations are both right
    assert result["by_category"] == {"attribute": 0.5}
    assert result["unparsed"] == 0 and result["incomplete_questions"] == 0


def test_mmbench_unparsed_answer_is_wrong_and_counted_and_incomplete_groups_are_reported():
    records = _circular(1, ["C", "B", "I am not sure", "D"], ["C", "B", "A", "D"])
    partial = _circular(2, ["C", "B", "A", "D"], ["C", "B", "A", "D"])[:3]  # a rotation missing
    result = score_mmbench(records + partial)
    assert result["metrics"]["circular_accuracy"] == 0.0
    assert result["unparsed"] == 1
    assert result["incomplete_questions"] == 1 and result["questions"] == 1


def test_mmbench_judge_matches_free_form_answers():
    options = ["teddy bear", "rabbit", "cat", "dog"]
    records = [
        {
            "qid": "5",
            "prediction": "It looks like a kitten to me",
            "gold": "C",
            "meta": {
                "group": 5,
                "round": 0,
                "circular_size": 1,
                "options": options,
                "question": "What is it",
                "category": "c",
                "l2_category": "l",
            },
        }
    ]
    assert score_mmbench(records)["unparsed"] == 1
    with JudgeServer(lambda prompt, body: "C") as server:
        result = score_mmbench(records, judge=make_judge(server))
    assert result["metrics"]["circular_accuracy"] == 1.0 and result["judge_matched"] == 1 and result["unparsed"] == 0
    assert (
        "Options: There are several options: \nA. teddy bear\nB. rabbit\nC. cat\nD. dog\n"
        in server.requests[0]["body"]["messages"][0]["content"]
    )


def load(bench, data, **kwargs):
    return load_samples(get_benchmark(bench), LoadOptions.create(data, **kwargs))


def test_mmbench_circular_file(tmp_path):
    samples, invalid = load("mmbench", write_mmbench_tsv(tmp_path / "MMBench_DEV_EN.tsv", circular=True))
    assert len(samples) == 8 and invalid[0].reason == "row has no integer 'index'"
    assert "unknown answer format" in invalid[1].reason
    by_qid = {s.qid: s for s in samples}
    assert by_qid["3"].prompt == (
        "Which colour dominates?\nA. red\nB. green\nC. blue\nD. yellow\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert by_qid["1000003"].meta["options"] == ["green", "blue", "yellow", "red"] and by_qid["1000003"].gold == "A"
    # rotations refer to the first row's image by its index
    assert by_qid["2000003"].images == by_qid["3"].images and by_qid["3"].images[0].startswith("data:image;base64,")
    assert {s.meta["circular_size"] for s in samples} == {4}


def test_mmbench_rotations_are_made_when_the_file_has_none(tmp_path):
    samples, _ = load("mmbench", write_mmbench_tsv(tmp_path / "mmb.tsv", circular=False))
    assert [s.qid for s in samples] == ["3", "1000003", "2000003", "3000003", "4", "1000004", "2000004", "3000004"]
    golds = [s.gold for s in samples[:4]]
    texts = [s.meta["options"]["ABCD".index(g)] for s, g in zip(samples[:4], golds)]
    assert golds == ["B", "A", "D", "C"] and texts == ["green"] * 4  # the right option follows its text
