"""The non-finite guard: at --lr 1e12 a run skips its non-finite steps, stops with one line and keeps its last
checkpoint, which --resume continues from; a step with no supervised token is counted and not trained on; two gloo
processes agree."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from minigemini import cli
from minigemini.train import TrainConfig, describe_summary, train
from minigemini.train.guard import NonFiniteTrainingError
from tests.helpers.training import caption_records, conversation, make_model_dir, write_images, write_jsonl
from tests.train.engine_helpers import torchrun, write_plan


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    names = write_images(root / "images", 4)
    data = write_jsonl(root / "data.jsonl", caption_records(names) * 6)
    return {"root": root, "model": make_model_dir(root / "model"), "images": str(root / "images"), "data": data}


def corrupt(workspace) -> list[dict]:
    (workspace["root"] / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return [conversation("<image>\nDescribe.", "Noise.", image="corrupt.png")] * 2


def flags(workspace, output, *more) -> list[str]:
    return [
        "train",
        *("--model", workspace["model"], "--data", workspace["data"], "--image-folder", workspace["images"]),
        *("--output", str(output), "--global-batch-size", "2", "--per-device-batch-size", "2", "--precision", "fp32"),
        *("--no-gradient-checkpointing", "--dataloader-workers", "0", "--warmup-ratio", "0", "--no-progress"),
        *("--lr-scheduler", "constant", "--sampler", "sequential", *more),
    ]


def finite(folder) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(os.path.join(folder, "model.safetensors")).values())


def test_lr_1e12_stops_in_one_line_without_writing_a_model(workspace, capsys, caplog):
    output = workspace["root"] / "nan"
    argv = flags(workspace, output, "--lr", "1e12", "--max-steps", "12", "--save-steps", "2")
    assert cli.main([*argv, "--max-nonfinite-steps", "3"]) == 2
    captured = capsys.readouterr()
    err_lines = [line for line in captured.err.splitlines() if line.startswith("mgm train")]
    assert len(err_lines) == 1, captured.err
    line = err_lines[0]
    assert line.startswith("mgm train: error: training stopped at step ")
    assert "3 non-finite steps in a row" in line and "learning rate too high (--lr 1e+12) or bad samples" in line
    assert "data.jsonl:" in line and "--resume" in line
    assert "Traceback" not in captured.err
    assert captured.out.count("optimizer step skipped") == 2  # the two skipped before the stop
    assert not os.path.exists(output / "model.safetensors")  # no result written
    checkpoints = list(output.glob("checkpoint-*"))
    assert checkpoints and all(finite(folder) for folder in checkpoints)  # skipped steps changed no weight
    assert cli.main([*argv, "--resume"]) == 2  # resumes (and, at the same learning rate, stops again)
    assert f"--resume: continuing from {checkpoints[0]} (step 2)" in caplog.text


class Poison(TrainerCallback):
    """Makes the loss NaN from a given step on (a forward hook on the LM head)."""

    def __init__(self, first_step: int):
        self.first_step = first_step
        self.handle = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 >= self.first_step and self.handle is None:
            head = model.get_output_embeddings()
            self.handle = head.register_forward_hook(lambda module, inputs, out: out * float("nan"))


def test_the_last_good_checkpoint_stays_and_resume_continues_from_it(workspace):
    output = workspace["root"] / "poisoned"
    settings = {**settings_of(workspace, output), "learning_rate": 1e-3, "max_steps": 8}
    settings.update(save_steps=2, save_total_limit=3, max_nonfinite_steps=3)
    with pytest.raises(NonFiniteTrainingError, match="training stopped at step 5: .*/checkpoint-4, is kept"):
        train(TrainConfig(**settings), callbacks=[Poison(first_step=3)])
    assert not os.path.exists(output / "model.safetensors")
    good, after_skips = (load_file(output / f"checkpoint-{step}" / "model.safetensors") for step in (2, 4))
    for key, value in good.items():  # steps 3 and 4 were skipped: the weights are step 2's
        torch.testing.assert_close(after_skips[key], value, rtol=0, atol=0)
    result = train(TrainConfig(**{**settings, "resume": True}))
    assert result.summary["steps"] == 8 and result.summary["nonfinite_steps"] == 2  # steps 3, 4: in the checkpoint
    assert finite(output)


def settings_of(workspace, output) -> dict:
    return {
        "model": workspace["model"],
        "data": [workspace["data"]],
        "image_folder": [workspace["images"]],
        "output": str(output),
        "global_batch_size": 2,
        "per_device_batch_size": 2,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "dataloader_workers": 0,
        "progress": False,
        "sampler": "sequential",
        "warmup_ratio": 0.0,
    }


def test_skipped_steps_without_stopping_and_empty_batches(workspace):
    output = workspace["root"] / "skip"
    # a micro-batch whose samples were all skipped (unreadable images) has nothing supervised
    data = write_jsonl(
        workspace["root"] / "empty.jsonl", corrupt(workspace) + caption_records(["img1.png", "img2.png"])
    )
    settings = {
        "model": workspace["model"],
        "data": [data],
        "image_folder": [workspace["images"]],
        "output": str(output),
        "global_batch_size": 2,
        "per_device_batch_size": 2,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "dataloader_workers": 0,
        "progress": False,
        "sampler": "sequential",
        "learning_rate": 1e-3,
        "max_steps": 2,
    }
    result = train(TrainConfig(**settings))
    assert result.summary["empty_batches"] == 1 and result.summary["empty_steps"] == 1
    assert result.summary["nonfinite_steps"] == 0
    assert "1 micro-batch(es) had no supervised token (1 whole step(s) skipped)" in describe_summary(result.summary)
    # --max-nonfinite-steps 0: skip, never stop (the empty steps between do not break the steps in a row)
    result = train(
        TrainConfig(
            **{**settings, "output": f"{output}2", "learning_rate": 1e12, "max_steps": 8, "max_nonfinite_steps": 0}
        )
    )
    assert result.summary["nonfinite_steps"] >= 2 and result.summary["empty_steps"] == 4
    with pytest.raises(NonFiniteTrainingError, match="2 non-finite steps in a row"):
        train(
            TrainConfig(
                **{**settings, "output": f"{output}3", "learning_rate": 1e12, "max_steps": 8, "max_nonfinite_steps": 2}
            )
        )


def test_empty_step_leaves_the_weights(workspace):
    output = workspace["root"] / "empty_only"
    data = write_jsonl(workspace["root"] / "empty_only.jsonl", corrupt(workspace))
    settings = {
        "model": workspace["model"],
        "data": [data],
        "image_folder": [workspace["images"]],
        "output": str(output),
        "global_batch_size": 2,
        "per_device_batch_size": 2,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "dataloader_workers": 0,
        "progress": False,
        "learning_rate": 1e-2,
        "weight_decay": 0.1,
        "max_steps": 1,
    }
    result = train(TrainConfig(**settings))
    assert result.summary["empty_steps"] == 1
    before = load_file(os.path.join(workspace["model"], "model.safetensors"))
    after = load_file(os.path.join(output, "model.safetensors"))
    for key, value in after.items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_two_processes_agree_to_skip_and_stop(workspace, tmp_path):
    """DDP over gloo: both ranks skip the same steps and stop together (no hang), with the error on both."""
    import subprocess

    from tests.train.engine_helpers import ROOT, WORKER, environment

    output = tmp_path / "ddp"
    run = {
        "model": workspace["model"],
        "data": [workspace["data"]],
        "image_folder": [workspace["images"]],
        "output": str(output),
        "global_batch_size": 4,
        "per_device_batch_size": 2,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "dataloader_workers": 0,
        "learning_rate": 1e12,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_steps": 8,
        "max_nonfinite_steps": 2,
        "save_steps": 100,
    }
    plan = write_plan(tmp_path / "plan.json", [run])
    command = torchrun("--standalone", "--nproc_per_node", "2") + [str(WORKER), str(plan)]
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert log.count("NonFiniteTrainingError: training stopped at step") == 2, log[-4000:]  # both ranks, same step
    assert log.count("optimizer step skipped") == 1  # rank 0 says it once
    assert not os.path.exists(output / "model.safetensors")


def test_a_refusal_is_printed_by_rank_0_only(workspace, tmp_path, capsys, monkeypatch):
    argv = flags(workspace, tmp_path / "o", "--data", str(tmp_path / "missing.jsonl"))
    monkeypatch.setenv("RANK", "1")
    assert cli.main(argv) == 2
    assert "mgm train" not in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.count("mgm train: error:") == 1
