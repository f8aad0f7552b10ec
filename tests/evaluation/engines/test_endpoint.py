"""`mgm eval --endpoint`: a real `mgm serve` on 127.0.0.1 answers as the transformers engine does; a failing endpoint's
questions are errors (not wrong answers), asked again by --retry-errors; a resumed run asks only what is unanswered."""

import argparse
import json

import pytest

from minigemini.cli import eval as eval_command
from minigemini.evaluation.runner import read_predictions
from minigemini.synthetic.benchmark import write_synthetic_benchmark
from tests.evaluation.eval_helpers import JudgeServer, build_checkpoint, one_torch_thread


def mgm_eval(*argv):
    parser = argparse.ArgumentParser(prog="mgm")
    eval_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *map(str, argv)])
    return args.func(args)


def answers(out):
    return {qid: r.get("prediction") for qid, r in read_predictions(out / "predictions.jsonl").items()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    with one_torch_thread():
        yield build_checkpoint(tmp_path_factory.mktemp("mgm-endpoint"))


def test_mgm_serve_as_endpoint_agrees_with_the_transformers_engine(checkpoint, tmp_path):
    import uvicorn

    from minigemini.loading import load_pretrained
    from minigemini.serve.app import create_app
    from minigemini.serve.settings import ServerSettings
    from tests.helpers.serving import run_in_thread

    data = write_synthetic_benchmark(tmp_path / "bench", n=12, seed=3)
    common = ("--bench", "synthetic", "--data", data, "--max-new-tokens", 5, "--allow-partial")
    mgm_eval("--model", checkpoint, "--out", tmp_path / "local", "--device", "cpu", "--dtype", "fp32", *common)
    model, processor = load_pretrained(checkpoint, device="cpu", dtype="fp32")
    app = create_app(model, processor, ServerSettings(), batch_wait=0)
    with run_in_thread(uvicorn.Server(uvicorn.Config(app, log_config=None))) as base:
        mgm_eval("--endpoint", base, "--concurrency", 4, "--out", tmp_path / "served", *common)
    local, served = answers(tmp_path / "local"), answers(tmp_path / "served")
    assert len(served) == 12 and all(isinstance(text, str) for text in served.values())
    same = sum(local[qid] == served[qid] for qid in local)
    print(f"mgm serve vs transformers: {same}/{len(local)} identical answers")
    assert same / len(local) >= 0.95, (local, served)
    manifest = json.loads((tmp_path / "served" / "manifest.json").read_text())
    assert manifest["engine"] == "endpoint" and manifest["model"]  # the first model the server lists


def test_failed_requests_are_errors_and_retried(tmp_path):
    data = write_synthetic_benchmark(tmp_path / "bench", n=6, seed=1)
    calls = {"n": 0}

    def flaky(content, body):
        calls["n"] += 1
        assert content[-1]["type"] == "text"
        assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
        return {1: 503, 2: b"<html>not json</html>"}.get(calls["n"], "red")

    out = tmp_path / "run"
    args = ("--bench", "synthetic", "--data", data, "--out", out, "--endpoint-retries", 0, "--concurrency", 1)
    with JudgeServer(flaky) as server:
        status = mgm_eval("--endpoint", server.url, "--endpoint-model", "m", *args)
        first = read_predictions(out / "predictions.jsonl")
        errors = [r for r in first.values() if "error" in r]
        assert status == 3 and len(errors) == 2 and len(first) == 6  # partial: two questions not scored
        assert any("InternalServerError" in r["error"] for r in errors)
        scores = json.loads((out / "scores.json").read_text())
        assert scores["counts"]["generation_errors"] == 2 and scores["counts"]["scored"] == 4
        asked = calls["n"]
        assert mgm_eval("--endpoint", server.url, "--endpoint-model", "m", *args) == 3  # resume: nothing to ask
        assert calls["n"] == asked
        assert mgm_eval("--endpoint", server.url, "--endpoint-model", "m", "--retry-errors", *args) == 0
        assert calls["n"] == asked + 2  # only the two that failed
    scores = json.loads((out / "scores.json").read_text())
    assert scores["status"] == "complete" and scores["counts"]["scored"] == 6


def test_an_endpoint_that_is_not_there_is_one_line(tmp_path):
    from minigemini.evaluation.samples import EvalError

    data = write_synthetic_benchmark(tmp_path / "bench", n=2, seed=1)
    with pytest.raises(EvalError, match="listing its models failed"):
        mgm_eval(
            "--endpoint",
            "http://127.0.0.1:9",
            "--endpoint-retries",
            0,
            "--endpoint-timeout",
            2,
            "--bench",
            "synthetic",
            "--data",
            data,
            "--out",
            tmp_path / "run",
        )
