"""Training on shards: `mgm train --data SHARDS/` streams them through two DataLoader workers; killed with SIGKILL
mid-epoch and resumed, it trains on exactly the samples of an uninterrupted run, in the same order, to the same
weights; skipped samples are counted by reason in the summary."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch

from minigemini.datatools.shard import write_shards
from minigemini.train import train
from minigemini.train.trainer import MiniGeminiTrainer
from tests.helpers.training import caption_records, conversation, write_images, write_jsonl
from tests.train.test_kill import ROOT, CountSteps, start_and_kill
from tests.train.test_stages import config, weights, workspace  # noqa: F401  (workspace is a fixture)

COMMON = {
    "stage": 2,
    "learning_rate": 1e-3,
    "max_steps": 6,
    "save_steps": 2,
    "save_total_limit": 2,
    "dataloader_workers": 2,
    "shuffle_buffer": 4,
}


@pytest.fixture(scope="module")
def shards(workspace):  # noqa: F811
    root = workspace["root"]
    names = write_images(root / "stream_images", 4, seed=3)
    records = caption_records([names[i % 4] for i in range(32)])
    records[5] = conversation("<image>\nDescribe.", "Noise.", image="corrupt.png")  # left out by `mgm data shard`
    data = write_jsonl(root / "stream.jsonl", records)
    result = write_shards(
        [data],
        root / "stream_shards",
        [str(root / "stream_images"), workspace["images"]],
        "webdataset",
        8,
        progress=False,
    )
    assert result.manifest["samples"] == 31 and result.manifest["skipped"] == {"unreadable_image": 1}
    # every image inside one shard goes bad after sharding (same sizes, so the manifest still matches)
    tar = root / "stream_shards" / "shard-00001.tar"
    with tarfile.open(tar) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    with tarfile.open(tar, "w") as dst:
        for member, data in members:
            bad = member.name.endswith(".png")
            dst.addfile(member, io.BytesIO(b"\x89PNG" + b"\0" * (len(data) - 4) if bad else data))
    assert tar.stat().st_size == result.manifest["shards"][1]["bytes"]
    return str(root / "stream_shards")


@pytest.fixture
def seen(monkeypatch):
    """The sample sources of every micro-batch the trainer trains on (in the main process)."""
    batches: list[list[str]] = []
    prepare = MiniGeminiTrainer._prepare_inputs

    def recording(self, inputs):
        if self.model.training and "data_stats" in inputs:
            batches.append(inputs["data_stats"].get("sources", []))
        return prepare(self, inputs)

    monkeypatch.setattr(MiniGeminiTrainer, "_prepare_inputs", recording)
    return batches


def test_killed_streamed_training_resumes_with_exactly_the_uninterrupted_samples(workspace, shards, seen):  # noqa: F811
    common = {**COMMON, "data": [shards], "image_folder": []}
    reference = train(config(workspace, "stream_reference", **common))
    expected = list(seen)
    accumulation = reference.summary["gradient_accumulation_steps"]
    assert len(expected) == COMMON["max_steps"] * accumulation
    flat = [s for batch in expected for s in batch]
    assert len(flat) == len(set(flat)) and reference.summary["dataset_samples"] == 31  # nothing twice
    # the epoch: 2 readers x 12 samples; those of the spoilt shard are counted by reason in the summary
    assert reference.summary["skipped"] == {"unreadable_image": 24 - len(flat)} and len(flat) < 24

    killed = config(workspace, "stream_killed", **common)
    step = start_and_kill(killed, os.path.join(workspace["root"], "stream_killed.log"))
    assert 2 <= step < COMMON["max_steps"]
    seen.clear()
    counter = CountSteps()
    resumed = train(config(workspace, "stream_killed", resume=True, **common), callbacks=[counter])
    assert counter.steps == COMMON["max_steps"] - step
    assert seen == expected[step * accumulation :]  # the samples after resuming, batch by batch
    assert resumed.summary["samples_seen"] == reference.summary["samples_seen"]
    assert resumed.summary["skipped"] == reference.summary["skipped"]  # the killed part's skips included

    want, got = weights(reference.output), weights(resumed.output)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-5, msg=name)


# `mgm train` under torchrun, writing each rank's micro-batches (their sample sources) to seen-RANK.jsonl in argv[1].
RECORDING_TRAIN = """
import json, os, sys
from minigemini.train.trainer import MiniGeminiTrainer
prepare = MiniGeminiTrainer._prepare_inputs
def recording(self, inputs):
    if self.model.training and "data_stats" in inputs:
        with open(os.path.join(sys.argv[1], f"seen-{os.environ['RANK']}.jsonl"), "a") as f:
            f.write(json.dumps(inputs["data_stats"].get("sources", [])) + "\\n")
    return prepare(self, inputs)
MiniGeminiTrainer._prepare_inputs = recording
from minigemini.cli import main
sys.exit(main(["train", *sys.argv[2:]]))
"""


def torchrun_train(cfg, log_dir):
    os.makedirs(log_dir, exist_ok=True)
    recipe, script = os.path.join(log_dir, "recipe.json"), os.path.join(log_dir, "train.py")
    with open(recipe, "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in cfg.to_dict().items() if v is not None}, f)
    with open(script, "w", encoding="utf-8") as f:
        f.write(RECORDING_TRAIN)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        script,
        log_dir,
        "--recipe",
        recipe,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = []
    for rank in (0, 1):
        with open(os.path.join(log_dir, f"seen-{rank}.jsonl"), encoding="utf-8") as f:
            seen.append([json.loads(line) for line in f])
    return seen


def test_two_ranks_two_workers_resume_mid_epoch_with_the_same_samples(workspace, shards):  # noqa: F811
    """DDP (2 ranks x 2 workers, 4 readers of the 4 shards): resumed from the mid-epoch checkpoint, each rank trains on
    exactly the micro-batches it trained on in the uninterrupted run, to the same weights."""
    common = {
        **COMMON,
        "data": [shards],
        "image_folder": [],
        "per_device_batch_size": 1,
        "max_steps": 4,
        "save_total_limit": 3,
    }
    root = workspace["root"]
    full = torchrun_train(config(workspace, "ddp_full", **common), str(root / "ddp_full_log"))
    accumulation = 2  # global batch 4 = 1 a micro-batch x 2 ranks x 2
    assert [len(rank) for rank in full] == [4 * accumulation] * 2
    shard_sets = [{s.split("#")[0] for batch in rank for s in batch} for rank in full]
    assert shard_sets[0] and shard_sets[1] and not shard_sets[0] & shard_sets[1]  # each rank reads its own shards

    shutil.copytree(root / "ddp_full" / "checkpoint-2", root / "ddp_resumed" / "checkpoint-2")
    resumed = torchrun_train(config(workspace, "ddp_resumed", resume=True, **common), str(root / "ddp_resumed_log"))
    assert resumed == [rank[2 * accumulation :] for rank in full]
    want, got = weights(root / "ddp_full"), weights(root / "ddp_resumed")
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-5, msg=name)
