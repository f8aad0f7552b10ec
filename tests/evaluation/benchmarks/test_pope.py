"""POPE (benchmarks/pope.py): labels joined by position per category, as eval_pope.py; the reading of answers
and the metrics worked out by hand."""

import json

import pytest

from minigemini.evaluation.benchmarks import get_benchmark
from minigemini.evaluation.benchmarks.pope import pope_yes_no, score_pope
from minigemini.evaluation.loader import LoadOptions
from minigemini.evaluation.runner import load_samples, score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_jsonl, write_png

SUFFIX = "\nAnswer the question using a single word or phrase."
POPE_QUESTIONS = {
    "adversarial": [
        ("COCO_val2014_000000310196.jpg", "snowboard", "yes"),
        ("COCO_val2014_000000310196.jpg", "dog", "no"),
        ("COCO_val2014_000000210789.jpg", "cup", "yes"),
        ("COCO_val2014_000000210789.jpg", "bench", "no"),
    ],
    "popular": [("COCO_val2014_000000429913.jpg", "person", "yes"), ("COCO_val2014_000000429913.jpg", "car", "no")],
}


def pope_files(root, swap_adversarial=False, extra_popular=False):
    """llava_pope_test.jsonl (ids run on across the categories) and coco/coco_pope_<category>.json (each file's
    ids start again at 1): only the order joins them."""
    rows, number = [], 0
    for category, questions in POPE_QUESTIONS.items():
        order = list(questions)
        if category == "adversarial" and swap_adversarial:
            order[0], order[1] = order[1], order[0]
        if category == "popular" and extra_popular:
            order.append(("COCO_val2014_000000429913.jpg", "kite", "no"))
        for image, thing, _ in order:
            number += 1
            write_png(root / "val2014" / image)
            rows.append(
                {
                    "question_id": number,
                    "image": image,
                    "text": f"Is there a {thing} in the image?" + SUFFIX,
                    "category": category,
                }
            )
        write_jsonl(
            root / "coco" / f"coco_pope_{category}.json",
            [
                {"question_id": i + 1, "image": image, "text": f"Is there a {thing} in the image?", "label": label}
                for i, (image, thing, label) in enumerate(questions)
            ],
        )
    return write_jsonl(root / "llava_pope_test.jsonl", rows), root / "coco"


def test_pope_labels_by_position_and_metrics_by_hand(tmp_path):
    questions, labels = pope_files(tmp_path)
    out = tmp_path / "run"
    answers = {
        "snowboard": "Yes, there is a snowboard.",  # yes (label yes)
        "dog": "No.",  # no (label no)
        "cup": "There is no cup.",  # "no" in the first sentence -> no (label yes)
        "bench": "Yes",  # yes (label no)
        "person": "I see a person.",  # no negation -> yes (label yes); neither yes nor no: unparsed
        "car": "No, there is not.",  # no (label no)
    }
    scripted_run(
        "pope", questions, out, by_question(answers), annotations=str(labels), image_dir=str(tmp_path / "val2014")
    )
    scores = score_run(out)
    adversarial, popular = scores["by_category"]["adversarial"], scores["by_category"]["popular"]
    assert adversarial["counts"] == {"TP": 1, "FP": 1, "TN": 1, "FN": 1}
    assert (
        adversarial["accuracy"] == 0.5 and adversarial["f1"] == pytest.approx(0.5) and adversarial["yes_ratio"] == 0.5
    )
    assert popular["counts"] == {"TP": 1, "FP": 0, "TN": 1, "FN": 0} and popular["f1"] == 1.0
    assert scores["metrics"]["f1"] == pytest.approx(0.75) and scores["metrics"]["accuracy"] == pytest.approx(0.75)
    assert scores["counts"]["unparsed"] == 1 and scores["status"] == "complete"


def test_pope_question_file_out_of_step_with_the_labels_is_reported(tmp_path):
    questions, labels = pope_files(tmp_path, swap_adversarial=True, extra_popular=True)
    samples, invalid = load_samples(get_benchmark("pope"), LoadOptions.create(questions, annotations=labels))
    # the two swapped rows would each take the other's label: both refused; the popular row past the end too
    assert len(samples) == 4 and len(invalid) == 3
    assert "out of step" in invalid[0].reason and invalid[0].where == "llava_pope_test.jsonl:1"
    assert "has 2 labels" in invalid[2].reason


def rec(prediction, gold, **meta):
    return {"qid": meta.pop("qid", str(id(meta))), "prediction": prediction, "gold": gold, "meta": meta}


@pytest.mark.parametrize(
    "answer, parsed",
    [
        ("Yes, there is a dog.", "yes"),
        ("No.", "no"),
        ("There is not a dog", "no"),
        ("Yes, there is no dog.", "no"),  # "no" in the first sentence wins
        ("No. But yes.", "no"),
        ("Yes. No.", "yes"),  # only the first sentence counts
        ("There is a cat.", "yes"),  # no negation -> yes
        ("Not really", "yes"),
    ],  # "Not" (capitalised) is not one of No/no/not
)
def test_pope_reading_of_answers(answer, parsed):
    assert pope_yes_no(answer) == parsed


def test_pope_counts_by_hand():
    golds = ["yes", "yes", "yes", "no", "no", "no"]
    answers = ["Yes, there is a dog.", "yes", "No.", "No, there is not.", "There is a cat.", "no"]
    # parsed: yes yes no no yes no -> TP=2 FN=1 TN=2 FP=1
    records = [rec(a, g, category="random") for a, g in zip(answers, golds)]
    result = score_pope(records)
    random = result["by_category"]["random"]
    assert random["counts"] == {"TP": 2, "FP": 1, "TN": 2, "FN": 1}
    assert random["accuracy"] == pytest.approx(4 / 6)
    assert random["precision"] == pytest.approx(2 / 3) and random["recall"] == pytest.approx(2 / 3)
    assert random["f1"] == pytest.approx(2 / 3) and random["yes_ratio"] == 0.5
    assert result["unparsed"] == 1  # "There is a cat." said neither yes nor no
    assert result["metrics"]["f1"] == pytest.approx(2 / 3)


def test_pope_average_over_categories():
    records = [
        rec("yes", "yes", category="adversarial"),
        rec("no", "yes", category="adversarial"),
        rec("yes", "yes", category="popular"),
        rec("no", "no", category="popular"),
    ]
    result = score_pope(records)
    assert result["by_category"]["adversarial"]["accuracy"] == 0.5
    assert result["by_category"]["popular"]["accuracy"] == 1.0
    assert result["metrics"]["accuracy"] == 0.75  # mean of the per-category figures
    assert result["by_category"]["popular"]["f1"] == 1.0 and result["by_category"]["adversarial"][
        "f1"
    ] == pytest.approx(2 / 3)


def load(bench, data, **kwargs):
    return load_samples(get_benchmark(bench), LoadOptions.create(data, **kwargs))


def test_pope_labels_from_the_coco_pope_folder(tmp_path):
    write_png(tmp_path / "COCO_val2014_1.jpg")
    (tmp_path / "llava_pope_test.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "question_id": 1,
                    "image": "COCO_val2014_1.jpg",
                    "text": "Is there a dog in the image?",
                    "category": "adversarial",
                },
                {
                    "question_id": 1,
                    "image": "COCO_val2014_1.jpg",
                    "text": "Is there a cat in the image?",
                    "category": "random",
                },
            ]
        )
        + "\n"
    )
    labels = tmp_path / "coco"
    labels.mkdir()
    for category, text, label in (("adversarial", "dog", "yes"), ("random", "cat", "no")):
        line = {"question_id": 1, "image": "COCO_val2014_1.jpg", "text": f"Is there a {text} in the image?"}
        (labels / f"coco_pope_{category}.json").write_text(json.dumps({**line, "label": label}) + "\n")
    samples, invalid = load("pope", tmp_path / "llava_pope_test.jsonl", annotations=labels)
    # the same question id in two categories: the second is a duplicate id, reported, not scored twice
    assert [s.gold for s in samples] == ["yes"] and invalid[0].reason == "duplicate question id"
    assert samples[0].prompt == "Is there a dog in the image?\nAnswer the question using a single word or phrase."
