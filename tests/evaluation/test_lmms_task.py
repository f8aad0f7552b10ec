"""docs/evaluation.md's lmms-eval walk-through, run as written on a tiny random model: its task files (the ```yaml
and ```python blocks of the lmms-eval section) in `lmms-tasks/`, its ```bash commands in order, with `mgm` and
`python` this checkout's, DIR the tiny model and the server on a free port.

lmms-eval's CLI runs for real in a subprocess (`--model minigemini`, found through the entry point) and must answer
as `mgm eval` does, with its `exact_match` equal to the project's own GQA scoring of the answers it logged.  A random
model answers gibberish, so between `mgm eval` and lmms-eval every other reference answer is replaced by the
model's own answer upper-cased with a full stop: the score is then about 1/2, and lmms-eval's case and punctuation
handling is exercised.  The hub is unreachable here: HF_HUB_OFFLINE=1, and the datasets cache is the test's own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from minigemini.evaluation.benchmarks.vqa import score_exact_match
from minigemini.evaluation.runner import read_predictions
from tests.evaluation.eval_helpers import VLLM_HEADS, build_checkpoint
from tests.helpers.serving import free_port
from tests.helpers.vllm_env import VLLM_ENV, stop_process_group, vllm_python, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "evaluation.md"
TASK = "mgm_synthetic"
DOC_PORT = "8000"


def lmms_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    return text[text.index("## lmms-eval") :]


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", lmms_section(), flags=re.DOTALL | re.MULTILINE)


def doc_commands() -> list[str]:
    lines = "\n".join(doc_blocks("bash")).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@dataclass
class Walkthrough:
    folder: Path
    model: Path
    env: dict
    questions: list[dict]  # bench/questions.jsonl after the references were rewritten
    mgm_answers: list[str]  # `mgm eval`'s answers, in question order


def shell_env(folder: Path) -> dict:
    """`mgm` and `python` of this checkout first on the PATH; one thread; no hub; the test's own datasets cache."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for name, target in (("mgm", f'"{sys.executable}" -m minigemini.cli'), ("python", f'"{sys.executable}"')):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(folder / "hf-datasets"),
    }


def run(command: str, folder: Path, env: dict, model: Path, timeout: float = 300) -> str:
    """One documented command in ``folder``, DIR standing for ``model``; fails with its output unless it exits 0."""
    command = command.replace("DIR", str(model))
    done = subprocess.run(
        ["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done.stdout


def rewrite_references(data: Path, answers: list[str]) -> list[dict]:
    """Every other question's reference becomes the model's own answer, upper-cased with a full stop."""
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for index, (row, answer) in enumerate(zip(rows, answers)):
        if index % 2 == 0:
            row["answer"] = answer.upper() + "."
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> Walkthrough:
    folder = tmp_path_factory.mktemp("lmms-walkthrough")
    model = build_checkpoint(folder / "model", seed=5, text_overrides=VLLM_HEADS)  # vLLM's CPU kernels take it
    (folder / "lmms-tasks").mkdir()
    [task_yaml], [task_utils] = doc_blocks("yaml"), doc_blocks("python")
    (folder / "lmms-tasks" / f"{TASK}.yaml").write_text(task_yaml)
    (folder / "lmms-tasks" / "utils.py").write_text(task_utils)
    env = shell_env(folder)
    write_questions, mgm_eval = doc_commands()[:2]
    run(write_questions, folder, env, model)
    run(mgm_eval, folder, env, model)
    data = folder / "bench" / "questions.jsonl"
    ids = [json.loads(line)["question_id"] for line in data.read_text().splitlines()]
    predictions = read_predictions(folder / "mgm-gqa" / "predictions.jsonl")
    answers = [predictions[qid]["prediction"] for qid in ids]
    return Walkthrough(folder, model, env, rewrite_references(data, answers), answers)


def lmms_output(folder: Path) -> tuple[dict, list[dict]]:
    """The results JSON and the logged samples (in question order) that one lmms-eval run wrote under ``folder``."""
    [results] = folder.glob("**/*_results.json")
    [samples] = folder.glob(f"**/*_samples_{TASK}.jsonl")
    logged = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda s: s["doc_id"])
    return json.loads(results.read_text()), logged


def check_lmms_run(walk: Walkthrough, out: Path, min_agreement: float = 1.0) -> list[str]:
    """lmms-eval ran the task on every question, answered like `mgm eval`, and scored its answers as GQA's rule does."""
    results, samples = lmms_output(out)
    answers = [sample["filtered_resps"] for sample in samples]
    assert [s["doc_id"] for s in samples] == list(range(len(walk.questions)))
    assert [s["target"] for s in samples] == [q["answer"] for q in walk.questions]
    agreement = sum(a == b for a, b in zip(answers, walk.mgm_answers)) / len(answers)
    assert agreement >= min_agreement, (answers, walk.mgm_answers)
    records = [{"prediction": a, "gold": [q["answer"]]} for a, q in zip(answers, walk.questions)]
    ours = [score_exact_match([record])["metrics"]["accuracy"] for record in records]
    assert [s["exact_match"] for s in samples] == ours
    metric = results["results"][TASK]["exact_match,none"]
    assert metric == pytest.approx(score_exact_match(records)["metrics"]["accuracy"])
    assert results["n-samples"][TASK]["effective"] == len(walk.questions)
    return answers


def test_the_commands_are_the_walkthrough():
    commands = doc_commands()
    assert [command.split()[:3] for command in commands] == [
        ["mgm", "eval", "synthetic"],
        ["mgm", "eval", "--model"],
        ["python", "-m", "lmms_eval"],
        ["mgm", "serve", "--model"],
        ["python", "-m", "lmms_eval"],
        [".venv-vllm/bin/python", "-m", "lmms_eval"],
    ]
    assert "pretrained=DIR " in commands[2] and "endpoint=http://127.0.0.1:8000 " in commands[4]
    assert "pretrained=DIR,engine=vllm," in commands[5]


def run_lmms(walk: Walkthrough, command: str, out: str, env: dict | None = None, replace: dict | None = None) -> Path:
    """One documented lmms-eval command (``replace``: text to swap in it first); the folder it wrote its output to."""
    for old, new in (replace or {}).items():
        command = command.replace(old, new)
    run(command, walk.folder, env or walk.env, walk.model, timeout=600)
    return walk.folder / out


def test_lmms_eval_runs_the_task_like_mgm_eval(walkthrough):
    answers = check_lmms_run(walkthrough, run_lmms(walkthrough, doc_commands()[2], "lmms-out"))
    assert len(set(answers)) > 1  # a model that answers every question alike would hide a mix-up
    results, _ = lmms_output(walkthrough.folder / "lmms-out")
    assert 0.5 <= results["results"][TASK]["exact_match,none"] < 1  # the rewritten half, and gibberish elsewhere


def test_lmms_eval_through_mgm_serve(walkthrough):
    serve, lmms = doc_commands()[3:5]
    port = str(free_port())
    serve = serve.removesuffix("&").strip().replace(f"--port {DOC_PORT}", f"--port {port}")
    serve = serve.replace("DIR", str(walkthrough.model))
    log = walkthrough.folder / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            ["bash", "-c", f"exec {serve}"], cwd=walkthrough.folder, env=walkthrough.env,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_healthy(server, f"http://127.0.0.1:{port}", log, 120, "mgm serve")
        check_lmms_run(
            walkthrough,
            run_lmms(walkthrough, lmms, "lmms-out-served", replace={f"127.0.0.1:{DOC_PORT}": f"127.0.0.1:{port}"}),
        )
    finally:
        stop_process_group(server)


def test_lmms_eval_with_the_vllm_engine(walkthrough):
    """In the vLLM environment (`make vllm-venv` installs lmms-eval there): the same threshold as the vLLM engine's
    own tests (tests/evaluation/engines/test_vllm.py)."""
    command = doc_commands()[5].replace(".venv-vllm/bin/python", str(vllm_python()))
    out = run_lmms(walkthrough, command, "lmms-out-vllm", env={**walkthrough.env, **VLLM_ENV})
    check_lmms_run(walkthrough, out, min_agreement=0.95)
