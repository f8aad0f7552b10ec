"""Clients that go away, against a real uvicorn server on 127.0.0.1: a non-streaming request whose client hangs up
stops generating within one decode step (counted, not timed), a waiting one leaves the queue, and an upload aborted
mid-body is one INFO line, no traceback."""

import json
import logging
import socket
import time

import httpx
import pytest

from minigemini import MiniGeminiProcessor
from minigemini.loading import load_pretrained
from minigemini.serve.app import create_app
from minigemini.serve.batching import BatchingEngine
from minigemini.serve.settings import ServerSettings
from tests.helpers.serving import run_in_thread, save_tiny_mgm, script_answers

MAX_TOKENS = 1500


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_mgm(tmp_path_factory.mktemp("mgm-gone"), max_position_embeddings=2048)


def wait_for(condition, limit: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def post(sock, body: dict) -> None:
    payload = json.dumps(body).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))  # fmt: skip


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_a_client_that_hangs_up_stops_its_generation(model_dir, monkeypatch, caplog, stream):
    import uvicorn

    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="minigemini.serve")  # whatever an earlier `mgm serve` configured
    script_answers(monkeypatch, MiniGeminiProcessor.from_pretrained(model_dir), "word " * (MAX_TOKENS + 100))
    model, processor = load_pretrained(model_dir)
    steps = [0]  # forward passes of the model: one per decode step (plus the prefill)
    model.register_forward_hook(lambda *args: steps.__setitem__(0, steps[0] + 1))
    app = create_app(model, processor, ServerSettings(max_tokens_limit=MAX_TOKENS), batch_wait=0)
    engine = app.state.engine
    jobs, at_cancel = [], []
    submit, cancel = engine.submit, engine.cancel
    engine.submit = lambda request, on_done=None: jobs.append(submit(request, on_done)) or jobs[-1]
    engine.cancel = lambda job: at_cancel.append(steps[0]) or cancel(job)
    body = {
        "messages": [{"role": "user", "content": "talk for a long time"}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }
    with run_in_thread(uvicorn.Server(uvicorn.Config(app, log_config=None))) as base:
        host, port = base.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=30)
        post(sock, body)
        wait_for(lambda: steps[0] >= 5, what="generation to start")
        sock.close()  # the client hangs up mid-generation
        wait_for(lambda: jobs and jobs[0].done.is_set(), what="the job to end")
        generation = jobs[0].request
        assert generation.finish_reason == "cancelled"
        assert len(at_cancel) == 1 and steps[0] - at_cancel[0] <= 1  # at most the decode step already under way
        assert 5 <= steps[0] < MAX_TOKENS // 2
        # the model is free: the next request is answered, and it is the only work done meanwhile
        before = steps[0]
        answer = httpx.post(base + "/v1/chat/completions", timeout=60,
                            json={**body, "max_tokens": 3, "stream": False}).json()  # fmt: skip
        assert answer["usage"]["completion_tokens"] == 3 and answer["choices"][0]["finish_reason"] == "length"
        assert steps[0] - before == 3  # prefill + 2 decode steps for 3 tokens
        assert engine.cancelled == 1 and httpx.get(base + "/health").json()["cancelled"] == 1
    lines = [r for r in caplog.records if r.name == "minigemini.serve"]
    assert [r.levelno for r in lines] == [logging.INFO] and "generation cancelled" in lines[0].getMessage()
    assert ("streaming" in lines[0].getMessage()) == stream


def test_a_waiting_request_whose_client_hangs_up_leaves_the_queue(model_dir):
    model, processor = load_pretrained(model_dir)
    engine = BatchingEngine(model, processor)  # not started: jobs stay queued
    app = create_app(model, processor, ServerSettings(default_max_tokens=2), engine=engine)
    done = []
    from minigemini.engine import GenerationRequest

    inputs = processor(text="hello")
    job = engine.submit(GenerationRequest(inputs, 2), on_done=done.append)
    assert engine.pending() == 1
    engine.cancel(job)
    assert engine.pending() == 0 and job.done.is_set() and done == [job]
    assert job.request.finish_reason == "cancelled" and engine.cancelled == 1
    engine.cancel(job)  # twice is harmless
    assert engine.cancelled == 1
    assert app.state.engine is engine


def test_an_aborted_upload_is_one_info_line(model_dir, caplog):
    import uvicorn

    model, processor = load_pretrained(model_dir)
    app = create_app(model, processor, ServerSettings(default_max_tokens=1))
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="minigemini.serve")  # whatever an earlier `mgm serve` configured
    with run_in_thread(uvicorn.Server(uvicorn.Config(app, log_config=None))) as base:
        host, port = base.removeprefix("http://").split(":")
        caplog.clear()
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b'{"messages": [' + b" " * 5000)  # fmt: skip
        time.sleep(0.3)
        sock.close()  # mid-body
        wait_for(lambda: any("disconnected" in r.getMessage() for r in caplog.records), 30, "the log line")
        time.sleep(0.3)  # anything else it would log
        records = list(caplog.records)
        assert httpx.get(base + "/health", timeout=10).json()["status"] == "ok"
    assert [(r.name, r.levelno) for r in records] == [("minigemini.serve", logging.INFO)], [
        (r.name, r.levelname, r.getMessage()[:200]) for r in records
    ]
    assert "before sending the whole request body" in records[0].getMessage() and records[0].exc_info is None
