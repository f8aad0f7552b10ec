"""POPE and MME from snippets in the layout of the files LLaVA / MGM evaluate with (llava_pope_test.jsonl + POPE's
coco_pope_<category>.json; MME's release folder and llava_mme.jsonl); scores worked out by hand."""

import pytest

from minigemini.evaluation.base import LoadOptions
from minigemini.evaluation.benchmarks import get_benchmark
from minigemini.evaluation.mme import mme_yes_no
from minigemini.evaluation.pope import pope_yes_no
from minigemini.evaluation.runner import load_samples, score_run
from tests.eval_helpers import by_question, scripted_run, write_jsonl, write_png

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


@pytest.mark.parametrize(
    "answer, pope, mme",
    [
        ("Yes", "yes", "yes"),
        ("No", "no", "no"),
        ("Not sure", "yes", "no"),  # POPE: "Not" is not one of No/no/not; MME: "no" within "not "
        ("There is no dog.", "no", "other"),
        ("I think yes", "yes", "other"),
        ("yes, but no.", "no", "yes"),
    ],
)
def test_pope_and_mme_read_the_same_answer_differently(answer, pope, mme):
    assert pope_yes_no(answer) == pope and mme_yes_no(answer) == mme


def mme_release(root):
    """MME_Benchmark_release_version: artwork with images/ + questions_answers_YN/ (one question with the
    release's double space before "Please answer yes or no."), code_reasoning flat."""
    write_png(root / "artwork" / "images" / "10002.jpg")
    write_png(root / "artwork" / "images" / "10049.jpg")
    (root / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork created by Monet? Please answer yes or no.\tYes\n"
        "Is this artwork created by Dali? Please answer yes or no.\tNo\n"
    )
    (root / "artwork" / "questions_answers_YN" / "10049.txt").write_text(
        "Is this artwork displayed in the Louvre? Please answer yes or no.\tNo\n"
        "Is this artwork displayed in the Prado?  Please answer yes or no.\tYes\n"
    )
    write_png(root / "code_reasoning" / "0001.png")
    (root / "code_reasoning" / "0001.txt").write_text(
        "Will this code print 3? Please answer yes or no.\tYes\nWill this code print 4? Please answer yes or no.\tNo\n"
    )
    return root


def llava_mme(path):
    """llava_mme.jsonl: question_id "<subtask>/<image>" shared by an image's two questions; one question written
    without "Please answer yes or no." (convert_answer_to_mme.py puts it back)."""
    rows = [
        ("artwork/10002.jpg", "artwork/images/10002.jpg", "Is this artwork created by Monet? Please answer yes or no."),
        ("artwork/10002.jpg", "artwork/images/10002.jpg", "Is this artwork created by Dali? Please answer yes or no."),
        ("artwork/10049.jpg", "artwork/images/10049.jpg", "Is this artwork displayed in the Louvre?"),
        ("artwork/10049.jpg", "artwork/images/10049.jpg", "Is this artwork displayed in the Prado?"),
        ("code_reasoning/0001.png", "code_reasoning/0001.png", "Will this code print 3? Please answer yes or no."),
        ("code_reasoning/0001.png", "code_reasoning/0001.png", "Will this code print 4? Please answer yes or no."),
    ]
    return write_jsonl(
        path,
        [{"question_id": q, "image": i, "text": t + SUFFIX, "category": q.split("/")[0]} for q, i, t in rows],
    )


# artwork: Monet "Yes" (yes) right, Dali "No" (no) right, Louvre "no" (no) right, Prado "Not sure" -> "no" (yes)
# wrong: acc 3/4, acc+ 1/2 (10002 both right) -> 125.  code_reasoning: "Yes, it prints 3" (yes) right,
# "It does not" -> "other" (no) wrong, unparsed: acc 1/2, acc+ 0 -> 50.
MME_ANSWERS = {
    "Monet": "Yes",
    "Dali": "No",
    "Louvre": "no",
    "Prado": "Not sure",
    "print 3": "Yes, it prints 3",
    "print 4": "It does not",
}


def check_mme(scores):
    assert scores["subtasks"]["artwork"]["acc"] == 0.75 and scores["subtasks"]["artwork"]["acc_plus"] == 0.5
    assert scores["subtasks"]["artwork"]["score"] == pytest.approx(125.0)
    assert scores["subtasks"]["code_reasoning"]["score"] == pytest.approx(50.0)
    assert scores["metrics"] == {"perception": pytest.approx(125.0), "cognition": pytest.approx(50.0)}
    assert scores["counts"]["unparsed"] == 1 and scores["counts"]["scored"] == 6 and scores["status"] == "complete"


def test_mme_release_folder(tmp_path):
    folder = mme_release(tmp_path / "MME_Benchmark_release_version")
    out = tmp_path / "run"
    scripted_run("mme", folder, out, by_question(MME_ANSWERS))
    check_mme(score_run(out))


def test_mme_llava_question_file_joined_to_the_release_folder(tmp_path):
    folder = mme_release(tmp_path / "MME_Benchmark_release_version")
    questions = llava_mme(tmp_path / "llava_mme.jsonl")
    samples, invalid = load_samples(get_benchmark("mme"), LoadOptions.create(questions, folder, folder))
    assert not invalid
    assert [s.qid for s in samples[:4]] == [
        "artwork/10002.jpg#0",
        "artwork/10002.jpg#1",
        "artwork/10049.jpg#0",
        "artwork/10049.jpg#1",
    ]
    assert [s.gold for s in samples] == ["yes", "no", "no", "yes", "yes", "no"]  # Prado: found with two spaces
    assert samples[0].prompt == "Is this artwork created by Monet? Please answer yes or no." + SUFFIX
    out = tmp_path / "run"
    scripted_run("mme", questions, out, by_question(MME_ANSWERS), annotations=str(folder), image_dir=str(folder))
    check_mme(score_run(out))


def test_mme_llava_question_file_without_the_folder_or_with_a_question_it_lacks(tmp_path):
    folder = mme_release(tmp_path / "MME_Benchmark_release_version")
    questions = llava_mme(tmp_path / "llava_mme.jsonl")
    _, invalid = load_samples(get_benchmark("mme"), LoadOptions.create(questions, folder))
    assert len(invalid) == 6 and "give the MME release folder as the annotations" in invalid[0].reason
    (folder / "code_reasoning" / "0001.txt").write_text("Will this code print 3? Please answer yes or no.\tYes\n")
    samples, invalid = load_samples(get_benchmark("mme"), LoadOptions.create(questions, folder, folder))
    assert len(samples) == 5 and len(invalid) == 1 and "is not in the MME folder" in invalid[0].reason
