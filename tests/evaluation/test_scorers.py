"""Scorers of each benchmark on small hand-made prediction records whose scores are worked out by hand."""

import pytest

from minigemini.evaluation.choices import infer_option
from minigemini.evaluation.mathvista import edit_distance, extract_answer, normalize_extracted_answer, score_mathvista
from minigemini.evaluation.mme import mme_yes_no, score_mme
from minigemini.evaluation.mmmu import mmmu_correct, parse_multi_choice_response, parse_open_response, score_mmmu
from minigemini.evaluation.multiple_choice import score_mmbench
from minigemini.evaluation.pope import pope_yes_no, score_pope
from minigemini.evaluation.scienceqa import scienceqa_letter, score_scienceqa
from minigemini.evaluation.vqa import score_exact_match, score_vqa


def rec(prediction, gold, **meta):
    return {"qid": meta.pop("qid", str(id(meta))), "prediction": prediction, "gold": gold, "meta": meta}


# ---------------------------------------------------------------------------------------------- MME


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


# ---------------------------------------------------------------------------------------------- POPE


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


# ---------------------------------------------------------------------------------------------- MMBench


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("B", "B"),
        ("I choose B.", "B"),
        ("(C) dog", "C"),
        ("**D**", "D"),
        ("a cute teddy bear", "A"),  # the text of option A
        ("B or C", None),  # two letters, no text
        ("spider", None),
        ("Cannot determine the answer", "Z"),
    ],
)
def test_mmbench_answer_matching(answer, letter):
    choices = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}
    assert infer_option(answer, choices) == letter


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


# ---------------------------------------------------------------------------------------------- ScienceQA / SEED / GQA / VQA


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


# ---------------------------------------------------------------------------------------------- MMMU


def test_mmmu_multiple_choice_parsing():
    letters, index2ans = ["A", "B", "C", "D"], {"A": "red apple", "B": "green pear", "C": "plum", "D": "fig"}
    assert parse_multi_choice_response("The answer is (B).", letters, index2ans) == ("B", True)
    assert parse_multi_choice_response("B", letters, index2ans) == ("B", True)
    # several bare letters: the last one wins
    assert parse_multi_choice_response("It is C or D, final D", letters, index2ans) == ("D", True)
    # more than five words and an option's text
    assert parse_multi_choice_response("The picture shows a red apple on a table", letters, index2ans) == ("A", True)
    letter, parsed = parse_multi_choice_response("hmm", letters, index2ans)
    assert letter in letters and parsed is False  # MMMU's random fallback, flagged


def test_mmmu_open_parsing_and_matching():
    candidates = parse_open_response("The result is 3.50 dollars")
    assert 3.5 in candidates and "3.50 dollars" in candidates
    assert mmmu_correct("open", "3.5", candidates)
    assert mmmu_correct("open", ["7", "3.50"], candidates)
    assert not mmmu_correct("open", "4", candidates)
    assert mmmu_correct("open", "paris", parse_open_response("So the capital is Paris."))


def test_mmmu_score_counts_random_fallbacks():
    records = [
        {
            "qid": "validation_Art_1",
            "prediction": "(A)",
            "gold": "A",
            "meta": {
                "question_type": "multiple-choice",
                "options": ["x", "y"],
                "subject": "Art",
                "domain": "Art and Design",
            },
        },
        {
            "qid": "validation_Math_1",
            "prediction": "x = 12",
            "gold": "12",
            "meta": {"question_type": "open", "options": [], "subject": "Math", "domain": "Science"},
        },
        {
            "qid": "validation_Math_2",
            "prediction": "no idea",
            "gold": "B",
            "meta": {
                "question_type": "multiple-choice",
                "options": ["1", "2", "3"],
                "subject": "Math",
                "domain": "Science",
            },
        },
    ]
    result = score_mmmu(records)
    assert result["unparsed"] == 1
    assert result["by_subject"]["Art"] == 1.0
    assert result["by_domain"]["Art and Design"] == 1.0
    # the random pick is seeded: the score is reproducible
    assert score_mmmu(records)["metrics"] == result["metrics"]


# ---------------------------------------------------------------------------------------------- MathVista


def test_mathvista_normalisation():
    choices = ["3/11", "8/11", "6/11", "3/5"]
    assert normalize_extracted_answer("B", choices, "multi_choice", "text", None) == "8/11"
    assert normalize_extracted_answer("(B) 8/11", choices, "multi_choice", "text", None) == "8/11"
    assert normalize_extracted_answer("8/12", choices, "multi_choice", "text", None) == "8/11"  # closest by edits
    assert normalize_extracted_answer("14.0", [], "free_form", "integer", None) == "14"
    assert normalize_extracted_answer("1.454", [], "free_form", "float", 2) == "1.45"
    assert normalize_extracted_answer("fourteen", [], "free_form", "integer", None) is None
    assert normalize_extracted_answer([2007, 2008], [], "free_form", "list", None) == "[2007, 2008]"
    assert edit_distance("kitten", "sitting") == 3


def test_mathvista_rule_extraction_without_judge():
    problem = {"question_type": "free_form", "answer_type": "integer", "choices": [], "query": "q"}
    assert extract_answer("14", problem) == ("14", "rule")
    assert extract_answer('The answer is "14".', problem) == ("14", "rule")
    assert extract_answer("The number missing in the sequence is 14", problem) == ("14", "fallback")
    assert extract_answer("I cannot tell", problem) == ("I cannot tell", "none")
    assert extract_answer("", problem) == ("", "empty")


def test_mathvista_score():
    meta_int = {
        "question_type": "free_form",
        "answer_type": "integer",
        "choices": [],
        "precision": None,
        "query": "q",
        "metadata": {"category": "math-targeted-vqa", "skills": ["arithmetic", "algebra"]},
    }
    meta_mc = {
        "question_type": "multi_choice",
        "answer_type": "text",
        "choices": ["3/11", "8/11"],
        "precision": None,
        "query": "q",
        "metadata": {"category": "general-vqa", "skills": ["arithmetic"]},
    }
    records = [rec("14", "14", **meta_int), rec("It is 15 I think", "14", **meta_int), rec("B", "8/11", **meta_mc)]
    result = score_mathvista(records)
    assert result["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert result["breakdown"]["skills"]["arithmetic"] == pytest.approx(2 / 3)
    assert result["breakdown"]["category"] == {"general-vqa": 1.0, "math-targeted-vqa": 0.5}
    # "14" parses as an integer (MathVista's own rule); "It is 15 I think" and the bare letter "B" would go to
    # the LLM in MathVista's script: without a judge they are read by this project's fallback and counted.
    assert result["extraction"] == {"fallback": 2, "rule": 1}
    assert result["unparsed"] == 0
