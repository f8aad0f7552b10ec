"""MM-Vet (benchmarks/mmvet.py): LLaVA's question file joined to mm-vet.json, and the grader's prompt, retries
and failures."""

import pytest

from minigemini.evaluation.benchmarks.mmvet import grading_prompt, score_mmvet
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import (
    JudgeServer,
    by_question,
    make_judge,
    scripted_run,
    write_json,
    write_jsonl,
    write_png,
)


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


def test_mmvet_grading_with_the_official_prompt_and_retries():
    def grader(prompt, body):
        if "Predict the correctness of the answer (digit)" in prompt:  # the retry prompt
            return "0.5" if "| pretty blue |" in prompt else "no idea"
        if prompt.endswith("| blue | "):
            return "0.8 because"
        return "banana"  # not a number: asked again

    records = [
        {
            "qid": "v1_0",
            "prediction": "blue",
            "gold": "blue <OR> navy",
            "meta": {"question": "Colour?", "capability": ["rec"]},
        },
        {
            "qid": "v1_1",
            "prediction": "pretty blue",
            "gold": "azure",
            "meta": {"question": "Colour?", "capability": ["rec", "ocr"]},
        },
        {"qid": "v1_2", "prediction": "red", "gold": "crimson", "meta": {"question": "Colour?", "capability": ["ocr"]}},
    ]
    with JudgeServer(grader) as server:
        result = score_mmvet(records, judge=make_judge(server))
    # 0.8, then 0.5 on the first retry, then 0.0 after five tries for the third
    assert result["metrics"]["score"] == pytest.approx(100 * (0.8 + 0.5 + 0.0) / 3)
    assert result["by_capability"] == {"ocr": pytest.approx(25.0), "rec": pytest.approx(65.0)}
    assert result["judge_failures"] == 1
    first = server.requests[0]["body"]
    assert first["max_tokens"] == 3 and first["temperature"] == 0.0
    assert first["messages"][0]["content"] == grading_prompt("Colour?", "blue <OR> navy", "blue")
    assert first["messages"][0]["content"].endswith("\nColour? | blue  <OR>  navy | blue | ")
    temperatures = [
        r["body"]["temperature"] for r in server.requests if "| red |" in r["body"]["messages"][0]["content"]
    ]
    assert temperatures == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_mmvet_without_judge_is_not_scored():
    result = score_mmvet([{"qid": "v1_0", "prediction": "x", "gold": "y", "meta": {"question": "q", "capability": []}}])
    assert result["metrics"]["score"] is None and result["judge_required"]
