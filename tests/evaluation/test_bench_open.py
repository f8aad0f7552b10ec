"""MMMU, MathVista and MM-Vet from snippets in the layout of the files MGM evaluates with (MMMU's hub parquet,
MathVista's testmini.json, llava-mm-vet.jsonl + mm-vet.json), scored by hand from the official rules; the LLM
judge is a local stand-in server."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigemini.evaluation.mmmu import mmmu_correct, parse_open_response
from minigemini.evaluation.runner import score_run
from tests.eval_helpers import JudgeServer, by_question, png_bytes, scripted_run, write_json, write_jsonl, write_png


def mmmu_folder(root):
    """MMMU/<Subject>/validation-00000-of-00001.parquet with the hub's columns."""
    image = {"bytes": png_bytes((10, 10, 10)), "path": None}

    def row(qid, question, options, answer, question_type):
        return {
            "id": qid,
            "question": question,
            "options": options,
            "explanation": "",
            "image_1": image,
            "image_2": None,
            "img_type": "['Paintings']",
            "answer": answer,
            "topic_difficulty": "Easy",
            "question_type": question_type,
            "subfield": "Art History",
        }

    subjects = {
        "Art": [
            row(
                "validation_Art_1",
                "<image 1> Which style?",
                "['Baroque', 'Cubism', 'Impressionism']",
                "B",
                "multiple-choice",
            ),
            row(
                "validation_Art_2",
                "<image 1> Which period?",
                "['Modern', 'Gothic', 'Renaissance']",
                "A",
                "multiple-choice",
            ),
        ],
        "Math": [
            row("validation_Math_3", "<image 1> Solve for x.", "[]", "12", "open"),
            row("validation_Math_4", "<image 1> Give the value.", "[]", "['24/7', '3.429']", "open"),
            row("validation_Math_5", "<image 1> Which city?", "[]", "Paris", "open"),
        ],
    }
    for subject, rows in subjects.items():
        (root / subject).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / subject / "validation-00000-of-00001.parquet")
    return root


def test_mmmu_rules_by_hand(tmp_path):
    data = mmmu_folder(tmp_path / "MMMU")
    answers = {
        "Which style?": "(B) Cubism",  # gold B: bracketed letter -> right
        "Which period?": "It is either A or C, I would say C",  # gold A: bare letters, the last one (C) -> wrong
        "Solve for x.": "x = 12",  # "=" in the last sentence -> 12 -> right
        "Give the value.": "The answer is 3.429",  # 3.43 == round(3.429, 2) of the list's second answer -> right
        "Which city?": "The result is \nParis",  # only "is" is kept (see below) -> wrong
    }
    out = tmp_path / "run"
    scripted_run("mmmu", data, out, by_question(answers), split="validation")
    scores = score_run(out)
    assert scores["metrics"]["accuracy"] == pytest.approx(3 / 5)
    assert scores["by_subject"] == {"Art": 0.5, "Math": pytest.approx(2 / 3)}
    assert scores["counts"]["unparsed"] == 0 and scores["status"] == "complete"


def test_mmmu_open_answer_key_when_a_tail_is_empty():
    # eval_utils.py: in "the result is " the indicator "is " leaves an empty tail, which the next indicator
    # ("result ") replaces with "is"; the candidates are "is" only, not the whole response.
    assert parse_open_response("The result is \nParis") == ["is"]
    assert not mmmu_correct("open", "Paris", parse_open_response("The result is \nParis"))


def mathvista_files(root):
    """testmini.json ({pid: problem}, images under images/, precision a float as in the release)."""
    base = {"unit": None, "precision": None, "choices": None, "question_type": "free_form"}
    problems = {
        "1": {**base, "question": "How many birds?", "answer": "14", "answer_type": "integer"},
        "2": {
            **base,
            "question": "What fraction of the shape is blue?",
            "choices": ["3/11", "8/11", "6/11", "3/5"],
            "answer": "8/11",
            "question_type": "multi_choice",
            "answer_type": "text",
        },
        "3": {**base, "question": "How much money?", "answer": "1.45", "answer_type": "float", "precision": 2.0},
        "4": {**base, "question": "Between which years?", "answer": "[2007, 2008]", "answer_type": "list"},
        "5": {**base, "question": "How many cubes?", "answer": "3", "answer_type": "integer"},
    }
    for pid, problem in problems.items():
        write_png(root / "images" / f"{pid}.jpg")
        problem.update(
            pid=pid,
            image=f"images/{pid}.jpg",
            query=f"Hint: answer it.\nQuestion: {problem['question']}",
            metadata={
                "split": "testmini",
                "category": "math-targeted-vqa",
                "task": "figure question answering",
                "skills": ["arithmetic reasoning"],
            },
        )
    return write_json(root / "testmini.json", problems)


MATHVISTA_ANSWERS = {
    "birds": "14",  # an integer as it is: the rule takes it
    "fraction": "The correct answer is (B) 8/11.",
    "money": "Luca needs $1.45 in total.",
    "years": "Between 2007 and 2008.",
    "cubes": "There are three.",
}
EXTRACTED = {  # what the judge extracts (MathVista's few-shot prompt)
    "The correct answer is (B) 8/11.": "B",
    "Luca needs $1.45 in total.": "1.45",
    "Between 2007 and 2008.": "[2007, 2008]",
    "There are three.": "three",
}


def test_mathvista_with_the_judge_by_hand(tmp_path):
    data = mathvista_files(tmp_path)
    out = tmp_path / "run"
    scripted_run("mathvista", data, out, by_question(MATHVISTA_ANSWERS))

    def judge(prompt, body):
        response = prompt.split("\n\n")[-2]  # ...{query}\n\n{response}\n\nExtracted answer:
        return EXTRACTED[response]

    with JudgeServer(judge) as server:
        from minigemini.evaluation.judge import Judge, JudgeConfig

        scores = score_run(out, judge=Judge(JudgeConfig(base_url=server.url, model="gpt-4-0613", retry_wait=0)))
    # B -> "8/11" right; round(1.45, 2) -> "1.45" right; "[2007, 2008]" right; "three" is not an integer: wrong
    assert scores["metrics"]["accuracy"] == pytest.approx(4 / 5)
    assert scores["extraction"] == {"judge": 4, "rule": 1} and scores["counts"]["unparsed"] == 0
    assert len(server.requests) == 4


def test_mathvista_without_a_judge_uses_the_fallback_and_says_so(tmp_path):
    data = mathvista_files(tmp_path)
    out = tmp_path / "run"
    scripted_run("mathvista", data, out, by_question(MATHVISTA_ANSWERS))
    scores = score_run(out)
    # fallback: the single option letter (B) and the last number (1.45); the list and "three" stay unread
    assert scores["metrics"]["accuracy"] == pytest.approx(3 / 5)
    assert scores["extraction"] == {"fallback": 2, "none": 2, "rule": 1} and scores["counts"]["unparsed"] == 2


def test_mmvet_llava_question_file_joined_to_mm_vet_json(tmp_path):
    for name in ("v1_0.png", "v1_1.png"):
        write_png(tmp_path / "images" / name)
    questions = write_jsonl(
        tmp_path / "llava-mm-vet.jsonl",
        [
            {"question_id": 0, "image": "v1_0.png", "text": "What is x in the equation?"},
            {"question_id": 1, "image": "v1_1.png", "text": "What animal is this?"},
            {"question_id": 7, "image": "v1_1.png", "text": "Not in mm-vet.json"},
        ],
    )
    annotations = write_json(
        tmp_path / "mm-vet.json",
        {
            "v1_0": {
                "imagename": "v1_0.png",
                "capability": ["ocr", "math"],
                "question": "What is x in the equation?",
                "answer": "-1<AND>-5",
            },
            "v1_1": {
                "imagename": "v1_1.png",
                "capability": ["rec"],
                "question": "What animal is this?",
                "answer": "dog",
            },
        },
    )
    out = tmp_path / "run"
    answers = by_question({"equation": "x = -1", "animal": "A dog.", "Not in": "?"})
    scripted_run("mmvet", questions, out, answers, annotations=str(annotations), image_dir=str(tmp_path / "images"))
    without_judge = score_run(out)
    assert without_judge["counts"]["needs_judge"] == 2 and without_judge["counts"]["scored"] == 0
    assert without_judge["status"] == "partial"  # the unreadable row; with none it would be "unscored"

    def grader(prompt, body):  # the few-shot examples hold "x = -1" too: look at the last line only
        if prompt.endswith("What is x in the equation? | -1 <AND> -5 | x = -1 | "):
            return "0.5"
        if prompt.endswith("What animal is this? | dog | A dog. | "):
            return "maybe"  # not a number: asked again with the retry suffix
        assert prompt.endswith("A dog. | \nPredict the correctness of the answer (digit): ")
        return "1.0"

    with JudgeServer(grader) as server:
        from minigemini.evaluation.judge import Judge, JudgeConfig

        scores = score_run(out, judge=Judge(JudgeConfig(base_url=server.url, model="gpt-4-0613", retry_wait=0)))
    assert scores["metrics"]["score"] == pytest.approx(75.0) and len(server.requests) == 3  # (0.5 + 1.0) / 2 x 100
    assert scores["by_capability"] == {"math": 50.0, "ocr": 50.0, "rec": 100.0}
    assert scores["counts"]["unreadable"] == 1 and scores["status"] == "partial"
    assert scores["problems"]["unreadable_rows"][0]["reason"] == "v1_7 is not in mm-vet.json"
