"""`mgm data gen` against a local OpenAI-compatible endpoint started here: prompt design, format filter, retries,
timeouts, resume after an outage, tokens and cost."""

import asyncio
import json
import re
import threading
from collections import Counter

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from minigemini.data.skips import Skip
from minigemini.datatools.gen import (
    DEFAULT_EXAMPLE_PROMPTS,
    DEFAULT_INSTRUCTION_TEMPLATES,
    GenConfig,
    Item,
    build,
    build_messages,
    check_reply,
)
from tests.helpers.cli import data_main as main
from tests.helpers.serving import run_in_thread


class FakeLLM:
    """Canned replies chosen by markers in the query; records every request it receives."""

    def __init__(self):
        self.requests: list[str] = []  # the user message of each request
        self.served: Counter[str] = Counter()  # marker word -> successful replies
        self.seen: Counter[str] = Counter()
        self.fail_after: int | None = None  # every request after this many successes gets a 503
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.complete)

    async def complete(self, request: Request):
        body = await request.json()
        user = body["messages"][-1]["content"]
        self.requests.append(user)
        word = re.search(r"WORD(\w+)", user).group(1)
        self.seen[word] += 1
        if self.fail_after is not None and sum(self.served.values()) >= self.fail_after:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if "DOWN" in word:
            return JSONResponse({"error": {"message": "down"}}, status_code=500)
        if "FLAKY" in word and self.seen[word] == 1:
            return JSONResponse({"error": {"message": "try again"}}, status_code=500)
        if "SLOW" in word and self.seen[word] == 1:
            await asyncio.sleep(1.5)  # longer than the client's timeout: the reply is never received, and never
            return JSONResponse({"error": {"message": "too late"}}, status_code=504)  # counted (maybe in a later test)
        if "recaption" in body["model"]:
            reply = f"Instruction: draw {word.lower()} please\nAnswer: Here it is. <h>{word.lower()}, detailed, 8k</h>"
            if "MALFORMED" in word:
                reply = f"Instruction: draw it\nAnswer: Here it is. <h>{word.lower()}, detailed"  # never closed
            if "TWO" in word:
                reply = "Instruction: draw\nAnswer: <h>one</h> or <h>two</h>"
            if "NOINSTR" in word:
                reply = f"<h>{word.lower()}</h>"
        else:
            reply = f"<h>an illustration of {word.lower()}, soft light</h>"
        self.served[word] += 1
        words = len(user.split())
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": words, "completion_tokens": 7, "total_tokens": words + 7},
        }


@pytest.fixture(scope="module")
def llm():
    fake = FakeLLM()
    server = uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off"))
    with run_in_thread(server) as url:
        fake.url = f"{url}/v1"
        yield fake


@pytest.fixture
def fresh(llm):
    llm.requests.clear()
    llm.served.clear()
    llm.seen.clear()
    llm.fail_after = None
    return llm


def _captions(tmp_path, words):
    path = tmp_path / "captions.json"
    records = [
        {
            "id": f"c{i}",
            "image": f"{i}.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image."},
                {"from": "gpt", "value": f"A detailed photo of WORD{w} on a table, warm light."},
            ],
        }
        for i, w in enumerate(words)
    ]
    path.write_text(json.dumps(records))
    return path


def _config(llm, tmp_path, inputs, kind="recaption", **overrides):
    settings = {
        "kind": kind,
        "inputs": [str(p) for p in inputs],
        "output": str(tmp_path / "gen.json"),
        "base_url": llm.url,
        "model": f"fake-{kind}",
        "rpm": None,
        "workers": 2,
        "timeout": 0.5,
        "retries": 2,
        "backoff": 0.01,
        "progress": False,
        "price_input": 10.0,
        "price_output": 30.0,
    }
    settings.update(overrides)
    return GenConfig(**settings)


def test_recaption_filters_bad_replies_retries_and_reports(fresh, tmp_path):
    words = ["CAT", "DOG", "MALFORMED", "TWO", "NOINSTR", "FLAKY", "SLOW", "DOWN"]
    report = build(_config(fresh, tmp_path, [_captions(tmp_path, words)]))
    records = json.loads((tmp_path / "gen.json").read_text())
    kept = sorted(r["origin"] for r in records)
    assert kept == ["c0", "c1", "c5", "c6"]  # CAT, DOG, FLAKY (after a retry), SLOW (after a timeout)
    for record in records:
        human, gpt = (t["value"] for t in record["conversations"])
        assert human.endswith(" <GEN>") and human.startswith("draw ")
        assert gpt.count("<h>") == gpt.count("</h>") == 1 and record["source"] == "gen_recaption"
    assert {r: e["count"] for r, e in report["rejected_this_run"].items()} == {
        "unclosed_prompt_block": 1,
        "several_prompt_blocks": 1,
        "no_instruction": 1,
    }
    errors = report["endpoint_errors"]
    assert errors["http_500"]["count"] == 1 + 3  # FLAKY once, DOWN on each of its 3 attempts
    assert errors["timeout"]["count"] == 1 and errors["failed_items"]["count"] == 1
    assert "c7" in errors["failed_items"]["examples"][0]
    assert report["remaining"] == 1 and report["kept"] == 4 and report["rejected"] == 3
    # usage counts answered requests only: one per word but DOWN (a retried query has the same prompt)
    prompt_tokens = sum(len(r.split()) for r in {_word(r): r for r in fresh.requests if "DOWN" not in r}.values())
    assert report["tokens_this_run"]["completion_tokens"] == 7 * 7  # 7 answered queries (all but DOWN)
    assert report["tokens_this_run"]["prompt_tokens"] == prompt_tokens
    assert report["cost_usd_this_run"] == round(prompt_tokens * 10 / 1e6 + 49 * 30 / 1e6, 4)

    # the re-run asks only for the failed item (the endpoint is still down for it) and keeps the rest
    fresh.requests.clear()
    report = build(_config(fresh, tmp_path, [_captions(tmp_path, words)]))
    assert {_word(r) for r in fresh.requests} == {"DOWN"} and report["done_before"] == 7 and report["kept"] == 4
    assert report["tokens_total"]["completion_tokens"] == 49  # the cache remembers what was paid for


def _word(request):
    return re.search(r"WORD(\w+)", request).group(1)


def test_outage_stops_the_run_and_the_next_run_resumes_without_redoing(fresh, tmp_path, capsys):
    words = [f"ITEM{i}" for i in range(8)]
    path = _captions(tmp_path, words)
    fresh.fail_after = 3
    args = [
        "gen",
        "recaption",
        "--input",
        str(path),
        "-o",
        str(tmp_path / "gen.json"),
        "--base-url",
        fresh.url,
        "--model",
        "fake-recaption",
        "--workers",
        "1",
        "--retries",
        "1",
        "--backoff",
        "0.01",
        "--max-consecutive-errors",
        "2",
        "--rpm",
        "0",
        "--no-progress",
    ]
    assert main(args) == 1  # items remain
    captured = capsys.readouterr()
    assert "run the same command again" in captured.err
    first = json.loads((tmp_path / "gen.json").read_text())
    assert len(first) == 3  # what was done before the outage is written
    assert len(fresh.requests) == 3 + 2 * 2  # 3 answers, then 2 items x 2 attempts, then the run stopped

    fresh.fail_after = None
    done_words = set(fresh.served)
    fresh.requests.clear()
    assert main(args) == 0
    asked = {_word(r) for r in fresh.requests}
    assert not asked & done_words and len(asked) == 5  # only the 5 items not done
    records = json.loads((tmp_path / "gen.json").read_text())
    assert len(records) == 8 and len({r["id"] for r in records}) == 8
    assert all(n == 1 for n in fresh.served.values())  # no item was paid for twice


def test_context_generation_keeps_the_answer_and_adds_the_prompt(fresh, tmp_path):
    conversations = [
        {
            "id": "l1",
            "conversations": [
                {"from": "human", "value": "How do I save runny mayonnaise? WORDMAYO"},
                {"from": "gpt", "value": "Whisk a fresh yolk and add the runny mix slowly."},
                {"from": "human", "value": "Thanks"},
                {"from": "gpt", "value": "You're welcome."},
            ],
        },
        {
            "id": "l2",
            "image": "x.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWORDIMG"},
                {"from": "gpt", "value": "no"},
            ],
        },
    ]
    path = tmp_path / "lima.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in conversations) + "\n{broken\n")
    report = build(_config(fresh, tmp_path, [path], kind="context"))
    records = json.loads((tmp_path / "gen.json").read_text())
    assert len(records) == 1
    human, gpt = (t["value"] for t in records[0]["conversations"])
    assert human == "How do I save runny mayonnaise? WORDMAYO <GEN>"
    assert gpt == "Whisk a fresh yolk and add the runny mix slowly.\n<h>an illustration of mayo, soft light</h>"
    assert "Whisk a fresh yolk" in fresh.requests[0]  # the real conversation is the context of the query
    assert report["input_problems"]["has_image"]["count"] == 1 and report["input_problems"]["bad_json"]["count"] == 1


def test_prompt_design_samples_five_examples_and_three_templates():
    item = Item(key="recaption:1", kind="recaption", origin="1", caption="A red barn in a field.")
    messages = build_messages(item, list(DEFAULT_EXAMPLE_PROMPTS), list(DEFAULT_INSTRUCTION_TEMPLATES), seed=0)
    user = messages[-1]["content"]
    assert sum(p in user for p in DEFAULT_EXAMPLE_PROMPTS) == 5
    assert sum(t in user for t in DEFAULT_INSTRUCTION_TEMPLATES) == 3
    assert "A red barn in a field." in user and "<h>" in user
    assert messages == build_messages(item, list(DEFAULT_EXAMPLE_PROMPTS), list(DEFAULT_INSTRUCTION_TEMPLATES), 0)
    other = Item(key="recaption:2", kind="recaption", origin="2", caption="x")
    other_user = build_messages(other, list(DEFAULT_EXAMPLE_PROMPTS), list(DEFAULT_INSTRUCTION_TEMPLATES), 0)[-1]
    assert other_user["content"].split("look like these:")[1] != user.split("look like these:")[1]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Instruction: draw a barn\nAnswer: Sure. <h>red barn, golden hour</h>", None),
        ("Instruction: draw a barn\nAnswer: Sure. <h></h>", "empty_prompt"),
        ("Instruction: draw a barn\nAnswer: Sure. red barn", "no_prompt_block"),
        ("Instruction: draw a barn <GEN>\nAnswer: <h>x</h>", "stray_tag"),
        ("Instruction: draw\nAnswer: <h>" + "word " * 100 + "</h>", "prompt_too_long"),
        ("", "empty_reply"),
    ],
)
def test_format_filter(reply, reason):
    item = Item(key="recaption:1", kind="recaption", origin="1", caption="c")
    if reason is None:
        assert check_reply(item, reply)["conversations"][0]["value"] == "draw a barn <GEN>"
        return
    with pytest.raises(Skip) as dropped:
        check_reply(item, reply)
    assert (dropped.value.reason, dropped.value.source) == (reason, "1") and str(dropped.value) == f"1: {reply[:200]!r}"


def test_bad_key_stops_at_once(tmp_path):
    app = FastAPI()
    calls = []

    @app.post("/v1/chat/completions")
    async def refuse():
        calls.append(1)
        return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    with run_in_thread(server) as url:
        path = _captions(tmp_path, ["A", "B", "C", "D"])
        args = [
            "gen",
            "recaption",
            "--input",
            str(path),
            "-o",
            str(tmp_path / "g.json"),
            "--base-url",
            f"{url}/v1",
            "--model",
            "m",
            "--workers",
            "1",
            "--no-progress",
            "--rpm",
            "0",
        ]
        assert main(args) == 2
    assert len(calls) == 1 and json.loads((tmp_path / "g.json.report.json").read_text())["fatal"].startswith("HTTP 401")


def test_ctrl_c_writes_what_is_done_and_a_torn_cache_line_is_redone(fresh, tmp_path, monkeypatch):
    from minigemini.datatools import gen as gen_builder

    path = _captions(tmp_path, [f"K{i}" for i in range(5)])
    real = gen_builder.check_reply
    seen = []

    def interrupt_third(*args, **kwargs):
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gen_builder, "check_reply", interrupt_third)
    threads_before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        build(_config(fresh, tmp_path, [path], workers=1))
    assert len(json.loads((tmp_path / "gen.json").read_text())) == 2
    monkeypatch.setattr(gen_builder, "check_reply", real)

    cache = tmp_path / "gen.json.gen-cache.jsonl"
    cache.write_text(cache.read_text() + '{"key": "recaption:c4", "status": "ok", "rec')  # died mid-write
    # the interrupted run leaves a request already sent to finish in its worker: it must not count as the next run's
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=30)
    fresh.requests.clear()
    report = build(_config(fresh, tmp_path, [path], workers=1))
    assert report["done_before"] == 2 and report["kept"] == 5 and len(fresh.requests) == 3


def test_against_mgm_serve(tmp_path, monkeypatch):
    """The builder talks to `mgm serve` itself (a tiny random model whose answer is scripted)."""
    import argparse

    from minigemini import MiniGeminiProcessor
    from minigemini.cli import serve as serve_cli
    from tests.helpers.serving import save_tiny_mgm, script_answers

    model_dir = save_tiny_mgm(tmp_path / "mgm", max_position_embeddings=4096)
    script_answers(monkeypatch, MiniGeminiProcessor.from_pretrained(model_dir), "<h>a green star</h>")
    parser = argparse.ArgumentParser()
    serve_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", str(model_dir), "--device", "cpu", "--log-level", "warning"])
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([{"id": "s", "conversations": _turns_text("Which shape has five points?", "A star.")}]))
    with run_in_thread(serve_cli.build_server(args)) as url:
        config = GenConfig(
            kind="context",
            inputs=[str(path)],
            output=str(tmp_path / "g.json"),
            base_url=f"{url}/v1",
            model="tiny",
            rpm=None,
            workers=1,
            timeout=120,
            progress=False,
            max_reply_tokens=40,
        )
        report = build(config)
    assert report["kept"] == 1 and report["tokens_total"]["completion_tokens"] > 0
    gpt = json.loads((tmp_path / "g.json").read_text())[0]["conversations"][1]["value"]
    assert gpt == "A star.\n<h>a green star</h>"


def _turns_text(question, answer):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
