"""Batching for training: right padding, labels padded with -100, every image of the batch in one tensor.

Samples that came back as their ``Skip`` (an image that failed to decode, ...) are dropped here and handed on in the
batch's ``data_stats`` with the count of samples and of those cut to max_length; the trainer takes it out before the
forward pass and counts them.  A batch of text-only samples carries no pixel
tensors, so the model never runs its encoders for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from minigemini.data.skips import Skip
from minigemini.modeling import IGNORE_INDEX

__all__ = ["DATA_STATS_KEY", "MiniGeminiCollator"]

#: Batch key with {"samples": int, "skipped": [Skip, ...]} (and "sources" of the samples kept, when the items name
#: them, and "truncated", the samples kept that were cut to max_length, when there are any); not a model input.
DATA_STATS_KEY = "data_stats"


@dataclasses.dataclass
class MiniGeminiCollator:
    """Collate ``SupervisedDataset`` items.

    Args:
        pad_token_id: id used for padding ``input_ids`` (attention_mask is 0 there).
        pad_to_multiple_of: round the padded length up (e.g. 8 for tensor cores).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any] | Skip]) -> dict[str, Any]:
        kept = [f for f in features if not isinstance(f, Skip)]
        stats: dict[str, Any] = {"samples": len(kept), "skipped": [f for f in features if isinstance(f, Skip)]}
        if truncated := sum(bool(f.get("truncated")) for f in kept):
            stats["truncated"] = truncated
        if kept and "source" in kept[0]:
            stats["sources"] = [f["source"] for f in kept]
        if not kept:
            # Every sample of this micro-batch was skipped: one padding token with no label keeps the step (and the
            # other ranks of a distributed run) going without training on anything.
            kept = [{"input_ids": torch.tensor([self.pad_token_id]), "labels": torch.tensor([IGNORE_INDEX])}]

        longest = max(len(f["input_ids"]) for f in kept)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(kept), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(kept), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(kept), longest), dtype=torch.long)
        for row, feature in enumerate(kept):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            labels[row, :n] = torch.as_tensor(feature["labels"])
            attention_mask[row, :n] = 1

        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        with_images = [f for f in kept if "pixel_values" in f]
        if with_images:
            batch["pixel_values"] = torch.cat([f["pixel_values"] for f in with_images])
            batch["high_res_pixel_values"] = torch.cat([f["high_res_pixel_values"] for f in with_images])
        batch[DATA_STATS_KEY] = stats
        return batch
