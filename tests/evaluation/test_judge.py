"""The LLM judge over HTTP, against a chat-completions server started here on 127.0.0.1."""

import pytest

from minigemini.evaluation.judge import Judge, JudgeConfig, JudgeError
from minigemini.evaluation.mathvista import score_mathvista
from minigemini.evaluation.mmvet import grading_prompt, score_mmvet
from minigemini.evaluation.multiple_choice import score_mmbench
from tests.eval_helpers import JudgeServer


def make_judge(server, **kwargs):
    return Judge(JudgeConfig(base_url=server.url, model="grader-1", retry_wait=0.0, timeout=5, **kwargs))


def test_chat_completion_request_and_api_key(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "secret-123")
    with JudgeServer(lambda prompt, body: f"echo:{prompt}") as server:
        judge = make_judge(server, api_key_env="MY_JUDGE_KEY")
        assert judge.complete("hello", max_tokens=5) == "echo:hello"
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["authorization"] == "Bearer secret-123"
    assert request["body"] == {
        "model": "grader-1",
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.0,
        "max_tokens": 5,
    }


def test_server_errors_are_retried_then_reported():
    calls = []

    def flaky(prompt, body):
        calls.append(prompt)
        return 503 if len(calls) == 1 else "ok"

    with JudgeServer(flaky) as server:
        assert make_judge(server).complete("x") == "ok"
        assert len(calls) == 2
    with JudgeServer(lambda p, b: 401) as server, pytest.raises(JudgeError, match="HTTP 401"):
        make_judge(server).complete("x")
    with JudgeServer(lambda p, b: 500) as server, pytest.raises(JudgeError, match="failed after 2 attempts"):
        make_judge(server, max_retries=1).complete("x")


def test_cache_avoids_asking_twice(tmp_path):
    with JudgeServer(lambda p, b: "0.7") as server:
        judge = make_judge(server, cache_path=tmp_path / "cache.jsonl")
        assert judge.complete("same") == "0.7" and judge.complete("same") == "0.7"
        again = make_judge(server, cache_path=tmp_path / "cache.jsonl")
        assert again.complete("same") == "0.7"
    assert len(server.requests) == 1


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


def test_mathvista_judge_extracts_what_rules_cannot():
    meta = {
        "question_type": "free_form",
        "answer_type": "integer",
        "choices": [],
        "precision": None,
        "query": "Hint: integer\nQuestion: How many?",
        "metadata": {},
    }
    records = [{"qid": "1", "prediction": "There are fourteen birds.", "gold": "14", "meta": meta}]
    with JudgeServer(lambda prompt, body: "14") as server:
        result = score_mathvista(records, judge=make_judge(server))
    assert result["metrics"]["accuracy"] == 1.0 and result["extraction"] == {"judge": 1}
    prompt = server.requests[0]["body"]["messages"][0]["content"]
    assert prompt.startswith("Please read the following example.")
    assert prompt.endswith("Hint: integer\nQuestion: How many?\n\nThere are fourteen birds.\n\nExtracted answer: ")


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
