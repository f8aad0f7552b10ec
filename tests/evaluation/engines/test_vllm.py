"""`mgm eval --engine vllm` for real on vLLM's CPU build (its own environment, tests/helpers/vllm_env.py): one engine
answers as the transformers engine does (same prompts, greedy), resuming a run the transformers engine began; vLLM's
OpenAI-compatible server answers the same as an endpoint; `--engine vllm` where vLLM is not installed is one line."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from minigemini.cli import eval as eval_command
from minigemini.evaluation.runner import read_predictions
from minigemini.evaluation.samples import EvalError
from minigemini.synthetic.benchmark import write_synthetic_benchmark
from tests.evaluation.eval_helpers import VLLM_HEADS, build_checkpoint, one_torch_thread
from tests.helpers.vllm_env import ROOT, vllm_environment, vllm_python, vllm_server

QUESTIONS = 8
COMMON = ("--bench", "synthetic", "--max-new-tokens", 6, "--dtype", "fp32", "--allow-partial")


def mgm_eval(*argv):
    parser = argparse.ArgumentParser(prog="mgm")
    eval_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *map(str, argv)])
    return args.func(args)


def answers(out):
    return {qid: r.get("prediction") for qid, r in read_predictions(out / "predictions.jsonl").items()}


def agreement(reference: dict, other: dict) -> float:
    assert set(other) == set(reference) and all(isinstance(text, str) for text in other.values())
    return sum(reference[qid] == other[qid] for qid in reference) / len(reference)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model vLLM's CPU kernels take (heads of 32, a word-level tokenizer: answers are words), the synthetic
    benchmark, and the transformers engine's answers to it."""
    root = tmp_path_factory.mktemp("eval-vllm")
    model = build_checkpoint(root / "model", text_overrides=VLLM_HEADS)
    data = write_synthetic_benchmark(root / "bench", n=QUESTIONS, seed=2)
    with one_torch_thread():
        mgm_eval("--model", model, "--data", data, "--out", root / "reference", "--device", "cpu", *COMMON)
    return root, model, data, answers(root / "reference")


def test_the_vllm_engine_answers_as_transformers_and_resumes(world):
    root, model, data, reference = world
    out = root / "vllm"
    with one_torch_thread():  # the transformers engine answers the first half; vLLM resumes with the rest
        mgm_eval("--model", model, "--data", data, "--out", out, "--limit", QUESTIONS // 2, "--device", "cpu", *COMMON)
    command = [str(vllm_python()), "-m", "minigemini.cli", "eval", "--engine", "vllm", "--model", str(model),
               "--data", str(data), "--out", str(out), "--vllm-arg", "enforce_eager=true", *map(str, COMMON)]  # fmt: skip
    env = vllm_environment(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-10000:])
        pytest.fail(f"mgm eval --engine vllm failed (exit {result.returncode}); its output is above")
    assert f"{QUESTIONS // 2} already answered, {QUESTIONS - QUESTIONS // 2} to go" in result.stderr
    assert agreement(reference, answers(out)) >= 0.95
    assert json.loads((out / "manifest.json").read_text())["engine"] == "vllm"


def test_data_parallel_replicas_answer_their_shards_as_transformers(world):
    """--data-parallel 2: two engine processes (one per GPU where there are GPUs; here both on the CPU), each answering
    its shard; the run merges them as a sharded run."""
    root, model, data, reference = world
    out = root / "data-parallel"
    command = [str(vllm_python()), "-m", "minigemini.cli", "eval", "--engine", "vllm", "--data-parallel", "2",
               "--model", str(model), "--data", str(data), "--out", str(out), "--vllm-arg", "enforce_eager=true",
               *map(str, COMMON)]  # fmt: skip
    env = vllm_environment(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-10000:])
        pytest.fail(f"mgm eval --engine vllm --data-parallel 2 failed (exit {result.returncode}); its output is above")
    shards = {qid for part in (0, 1) for qid in read_predictions(out / f"predictions.shard-{part}-of-2.jsonl")}
    assert len(shards) == QUESTIONS
    assert agreement(reference, answers(out)) >= 0.95


def test_a_vllm_server_as_endpoint_answers_as_transformers(world):
    root, model, data, reference = world
    arguments = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--served-model-name", "tiny"]
    with vllm_server(model, root / "vllm-server.log", *arguments) as url:
        mgm_eval("--endpoint", url, "--data", data, "--out", root / "served", *COMMON)
    served = answers(root / "served")
    assert agreement(reference, served) >= 0.95, (reference, served)
    assert json.loads((root / "served" / "manifest.json").read_text())["model"] == "tiny"


def test_engine_vllm_without_vllm_is_one_line(world):
    root, model, data, _ = world
    import importlib.util

    assert importlib.util.find_spec("vllm") is None  # vLLM lives in its own environment (.venv-vllm)
    with pytest.raises(EvalError, match=r"^--engine vllm needs vLLM in this environment: pip install"):
        mgm_eval("--engine", "vllm", "--model", model, "--data", data, "--out", root / "none", *COMMON)
