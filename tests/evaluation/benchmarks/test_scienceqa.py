"""ScienceQA (benchmarks/scienceqa.py): llava_test_CQM-A.json + problems.json, and the letters
eval_science_qa.py reads, including the answers on which parsers disagree."""

import pytest

from minigemini.evaluation.benchmarks.scienceqa import scienceqa_letter, score_scienceqa
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_json, write_png

OPTION_LETTER = "\nAnswer with the option's letter from the given choices directly."


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


def rec(prediction, gold, **meta):
    return {"qid": meta.pop("qid", str(id(meta))), "prediction": prediction, "gold": gold, "meta": meta}


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("B", "B"),
        (" B ", None),  # eval_science_qa.py compares the text as it is
        ("B. The cat", "B"),
        ("The answer is C.", "C"),
        ("The answer is C", None),  # its pattern wants a character after the letter
        ("The answer is B, no wait. The answer is C.", None),  # two matches: FAILED
        ("E", None),  # only three options
        ("Cat", None),
        ("b", None),
    ],
)
def test_scienceqa_letter(answer, letter):
    assert scienceqa_letter(answer, 3) == letter


def test_scienceqa_accuracy_and_image_subset():
    records = [
        rec("A", "A", num_options=2, has_image=True, category="physics"),
        rec("The answer is B.", "B", num_options=2, has_image=False, category="physics"),
        rec("cat", "A", num_options=2, has_image=True, category="biology"),
    ]
    result = score_scienceqa(records)
    assert result["metrics"] == {"accuracy": pytest.approx(2 / 3), "image_accuracy": 0.5}
    assert result["by_category"] == {"biology": 0.0, "physics": 1.0}
    assert result["unparsed"] == 1
