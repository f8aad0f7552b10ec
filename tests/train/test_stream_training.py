"""Training on shards: `mgm train --data SHARDS/` streams them through two DataLoader workers; killed with SIGKILL
mid-epoch and resumed, it trains on exactly the samples of an uninterrupted run, in the same order, to the same
weights; skipped samples are counted by reason in the summary."""

from __future__ import annotations

import os

import pytest
import torch

from minigemini.datatools.shard import write_shards
from minigemini.train import train
from minigemini.train.trainer import MiniGeminiTrainer
from tests.train.test_kill import CountSteps, start_and_kill
from tests.train.test_stages import config, weights, workspace  # noqa: F401  (workspace is a fixture)
from tests.training_helpers import caption_records, conversation, write_images, write_jsonl

COMMON = {"stage": 2, "learning_rate": 1e-3, "max_steps": 6, "save_steps": 2, "save_total_limit": 2,
          "dataloader_workers": 2, "shuffle_buffer": 4}  # fmt: skip


@pytest.fixture(scope="module")
def shards(workspace):  # noqa: F811
    root = workspace["root"]
    names = write_images(root / "stream_images", 4, seed=3)
    records = caption_records([names[i % 4] for i in range(32)])
    records[5] = conversation("<image>\nDescribe.", "Noise.", image="corrupt.png")  # left out by `mgm data shard`
    data = write_jsonl(root / "stream.jsonl", records)
    result = write_shards([data], root / "stream_shards", [str(root / "stream_images"), workspace["images"]],
                          "webdataset", 8, progress=False)  # fmt: skip
    assert result.manifest["samples"] == 31 and result.manifest["skipped"] == {"unreadable_image": 1}
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
    assert len(flat) == len(set(flat)) and reference.summary["dataset_samples"] == 31  # nothing twice, mid-epoch
    assert reference.summary["skipped_total"] == 0

    killed = config(workspace, "stream_killed", **common)
    step = start_and_kill(killed, os.path.join(workspace["root"], "stream_killed.log"))
    assert 2 <= step < COMMON["max_steps"]
    seen.clear()
    counter = CountSteps()
    resumed = train(config(workspace, "stream_killed", resume=True, **common), callbacks=[counter])
    assert counter.steps == COMMON["max_steps"] - step
    assert seen == expected[step * accumulation :]  # the samples after resuming, batch by batch
    assert resumed.summary["samples_seen"] == reference.summary["samples_seen"]

    want, got = weights(reference.output), weights(resumed.output)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-5, msg=name)
