"""MME (benchmarks/mme.py): the release folder, LLaVA's question file joined to it, and acc / acc+ by hand."""

import pytest

from minigemini.evaluation.benchmarks import get_benchmark
from minigemini.evaluation.benchmarks.mme import mme_yes_no, score_mme
from minigemini.evaluation.benchmarks.pope import pope_yes_no
from minigemini.evaluation.loader import LoadOptions
from minigemini.evaluation.runner import load_samples, score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_jsonl, write_mme, write_png

SUFFIX = "\nAnswer the question using a single word or phrase."


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


def rec(prediction, gold, **meta):
    return {"qid": meta.pop("qid", str(id(meta))), "prediction": prediction, "gold": gold, "meta": meta}


@pytest.mark.parametrize(
    "answer, parsed",
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("No, there is not.", "no"),
        ("no", "no"),
        ("Not sure", "no"),  # MME reads "no" in the first four characters
        ("I think yes", "other"),  # nothing in "i th"
        ("maybe", "other"),
    ],
)
def test_mme_reading_of_answers(answer, parsed):
    assert mme_yes_no(answer) == parsed


def test_mme_acc_plus_needs_both_questions_of_an_image():
    records = [
        # existence, image a: both right; image b: first right, second wrong
        rec("Yes", "yes", subtask="existence", image="a.jpg"),
        rec("No", "no", subtask="existence", image="a.jpg"),
        rec("Yes", "yes", subtask="existence", image="b.jpg"),
        rec("Yes", "no", subtask="existence", image="b.jpg"),
        # count, image c: two answers MME cannot read -> "other", wrong
        rec("maybe", "yes", subtask="count", image="c.jpg"),
        rec("perhaps", "no", subtask="count", image="c.jpg"),
        # code_reasoning (cognition), image d: both right
        rec("Yes, it prints 3", "yes", subtask="code_reasoning", image="d.png"),
        rec("No.", "no", subtask="code_reasoning", image="d.png"),
    ]
    result = score_mme(records)
    existence = result["subtasks"]["existence"]
    assert existence["acc"] == 0.75 and existence["acc_plus"] == 0.5  # 3/4 questions, 1/2 images
    assert existence["score"] == pytest.approx(125.0)
    assert result["subtasks"]["count"]["score"] == 0.0
    assert result["subtasks"]["code_reasoning"]["score"] == pytest.approx(200.0)
    assert result["metrics"] == {"perception": pytest.approx(125.0), "cognition": pytest.approx(200.0)}
    assert result["unparsed"] == 2
    assert "OCR" in result["subtasks_missing"]["perception"]


def test_mme_image_with_one_answer_is_left_out_of_acc_plus():
    records = [
        rec("Yes", "yes", subtask="OCR", image="x.jpg"),
        rec("No", "no", subtask="OCR", image="y.jpg"),
        rec("Yes", "no", subtask="OCR", image="y.jpg"),
    ]
    result = score_mme(records)
    assert result["subtasks"]["OCR"]["acc"] == pytest.approx(2 / 3)
    assert result["subtasks"]["OCR"]["acc_plus"] == 0.0  # only y.jpg has two answers, one wrong
    assert result["images_without_two_answers"] == 1


def load(bench, data, **kwargs):
    return load_samples(get_benchmark(bench), LoadOptions.create(data, **kwargs))


def test_mme_release_folders(tmp_path):
    samples, invalid = load("mme", write_mme(tmp_path / "MME_Benchmark_release_version"))
    assert [s.qid for s in samples] == ["artwork/10002.jpg#0", "artwork/10002.jpg#1", "code_reasoning/0001.png#0"]
    assert samples[0].prompt == (
        "Is this artwork created by Monet? Please answer yes or no.\nAnswer the question using a single word or phrase."
    )
    assert samples[0].images[0].endswith("artwork/images/10002.jpg") and samples[1].gold == "no"
    assert samples[2].meta == {"subtask": "code_reasoning", "image": "0001.png", "group": "cognition"}
    assert sorted(r.reason.split(":")[0] for r in invalid) == [
        "expected 'question<TAB>answer'",
        "unknown answer format",
    ]
