"""The LLM judge over HTTP, against a chat-completions server started here on 127.0.0.1."""

import pytest

from minigemini.evaluation.judge import JudgeError
from tests.evaluation.eval_helpers import JudgeServer, make_judge


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
