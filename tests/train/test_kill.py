"""`mgm train` killed with SIGKILL, then `--resume`: the last complete checkpoint is used, a half-written newer one is
skipped (and left in place), and the run ends with the weights of an uninterrupted one (same schedule, same data)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from minigemini.train import train
from minigemini.train.run import find_checkpoints
from tests.train.test_stages import config, weights, workspace  # noqa: F401  (workspace is a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = {"stage": 2, "learning_rate": 1e-3, "max_steps": 6, "save_steps": 2, "save_total_limit": 2}

# `mgm train` with each micro-batch slowed down (numerics untouched), so that the kill lands mid-run.
SLOW_TRAIN = """
import sys, time
from minigemini.train.trainer import MiniGeminiTrainer
step = MiniGeminiTrainer.training_step
def slow_step(self, *args, **kwargs):
    time.sleep(0.3)
    return step(self, *args, **kwargs)
MiniGeminiTrainer.training_step = slow_step
from minigemini.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def start_and_kill(cfg, log_path):
    """Run `mgm train` in a subprocess; SIGKILL it as soon as it has a complete checkpoint. Returns that step."""
    recipe = os.path.join(os.path.dirname(cfg.output), "killed_recipe.json")
    with open(recipe, "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in cfg.to_dict().items() if v is not None}, f)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SLOW_TRAIN, "--recipe", recipe], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                complete = [path for path, done in find_checkpoints(cfg.output) if done]
                if complete:
                    process.send_signal(signal.SIGKILL)
                    break
                assert process.poll() is None, (
                    f"mgm train ended before a checkpoint: {Path(log_path).read_text()[-3000:]}"
                )
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.02)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(cfg.output, "model.safetensors")), "killed after the end of the run"
    return int(os.path.basename(complete[-1]).rsplit("-", 1)[1])


def test_sigkilled_training_resumes_from_the_last_complete_checkpoint(workspace, caplog):  # noqa: F811
    common = {**COMMON, "data": [workspace["stage2"]]}
    reference = train(config(workspace, "reference", **common))

    killed = config(workspace, "killed", **common)
    step = start_and_kill(killed, os.path.join(workspace["root"], "killed.log"))
    assert 2 <= step < COMMON["max_steps"]

    # A newer checkpoint whose save was cut short: no trainer_state.json, truncated weights (loading them would fail).
    steps = [int(os.path.basename(path).rsplit("-", 1)[1]) for path, _ in find_checkpoints(killed.output)]
    half = os.path.join(killed.output, f"checkpoint-{max(steps) + COMMON['save_steps']}")
    shutil.copytree(os.path.join(killed.output, f"checkpoint-{step}"), half)
    os.remove(os.path.join(half, "trainer_state.json"))
    with open(os.path.join(half, "model.safetensors"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)
    assert [done for path, done in find_checkpoints(killed.output) if path == half] == [False]

    caplog.set_level(logging.WARNING, logger="minigemini.train.run")
    counter = CountSteps()
    resumed = train(config(workspace, "killed", resume=True, **common), callbacks=[counter])
    assert any("incomplete" in r.getMessage() and os.path.basename(half) in r.getMessage() for r in caplog.records), (
        caplog.text
    )
    assert resumed.trainer.state.global_step == COMMON["max_steps"]
    assert counter.steps == COMMON["max_steps"] - step  # continued from the complete checkpoint, not from scratch
    assert resumed.summary["samples_seen"] == reference.summary["samples_seen"]  # the killed part included

    expected, got = weights(reference.output), weights(resumed.output)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-5, msg=name)
