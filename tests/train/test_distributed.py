"""`torchrun --nproc_per_node 2` (DDP, gloo on CPU) trains the same model as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from minigemini.train import TrainConfig, train
from tests.helpers.training import caption_records, conversation, make_model_dir, write_images, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_train_the_same_model_as_one(tmp_path):
    model_dir = make_model_dir(tmp_path / "model")
    names = write_images(tmp_path / "images", 4)
    # 6 image + 2 text-only samples, global batch 4: one image-only step, then a mixed step in which one rank gets
    # only text (no encoder runs there, no gradient for mining/projector from that rank).
    records = (
        caption_records(names)
        + caption_records(names[:2])
        + [
            conversation("Say hi.", "Hi!"),
            conversation("What colour is the sofa?", "Red."),
        ]
    )
    data = write_jsonl(tmp_path / "data.jsonl", records)
    common = {
        "--stage": "2",
        "--model": model_dir,
        "--data": data,
        "--image-folder": str(tmp_path / "images"),
        "--global-batch-size": "4",
        "--lr": "1e-3",
        "--max-steps": "2",
        "--precision": "fp32",
        "--warmup-ratio": "0",
        "--dataloader-workers": "0",
        "--seed": "0",
        "--save-steps": "100",
    }

    single = TrainConfig.from_sources(
        None,
        {
            "stage": 2,
            "model": model_dir,
            "data": [data],
            "image_folder": [str(tmp_path / "images")],
            "global_batch_size": 4,
            "per_device_batch_size": 4,
            "learning_rate": 1e-3,
            "max_steps": 2,
            "precision": "fp32",
            "warmup_ratio": 0.0,
            "dataloader_workers": 0,
            "seed": 0,
            "save_steps": 100,
            "output": str(tmp_path / "single"),
            "progress": False,
        },
    )
    reference = train(single)

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "minigemini.train",
        "--per-device-batch-size",
        "2",
        "--output",
        str(tmp_path / "ddp"),
        "--no-progress",
    ]
    for flag, value in common.items():
        command += [flag, value]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]

    with open(tmp_path / "ddp" / "train_summary.json") as f:
        summary = json.load(f)
    assert summary["world_size"] == 2 and summary["gradient_accumulation_steps"] == 1
    assert summary["samples_seen"] == reference.summary["samples_seen"] == 8
    assert summary["tokens"] == reference.summary["tokens"]

    expected = load_file(os.path.join(reference.output, "model.safetensors"))
    got = load_file(tmp_path / "ddp" / "model.safetensors")
    initial = load_file(os.path.join(model_dir, "model.safetensors"))
    assert any(not torch.equal(initial[n], expected[n]) for n in expected if n.startswith("model.mm_projector."))
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-5, msg=name)
