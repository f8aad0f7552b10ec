"""SupervisedDataset: LLaVA-format conversations -> token ids, labels and image tensors for MiniGemini training.

Everything that can be checked without decoding pixels is checked once, up front (records, image files exist,
tokenisation, length): a bad record is skipped and counted there (``skips``), and data with no usable record is an
error before the model is even loaded.  An image that exists but cannot be decoded is only found when its sample is
loaded; that sample then comes back as its ``Skip``, which the collator drops and counts -- never a crash mid-epoch,
never a sample trained without its image.  A sample cut to max_length is marked ``truncated`` when it is loaded and
counted by the collator, as a ``ShardStream``'s are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from minigemini.data.labels import ConversationEncoder
from minigemini.data.records import DataError, Record, read_records
from minigemini.data.skips import Skip
from minigemini.image_processing import ImageLoadError, MiniGeminiImageProcessor, load_image
from minigemini.modeling import IGNORE_INDEX

__all__ = ["SupervisedDataset", "fit_to_length", "load_sample"]

logger = logging.getLogger(__name__)

_SCAN_BATCH = 512


def fit_to_length(
    ids: np.ndarray, labels: np.ndarray, max_length: int, image_token_id: int, source: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """The max_length rule: (ids, labels) kept or truncated (image tokens intact, something supervised left); raises
    a ``too_long`` ``Skip`` when a cut cannot keep the sample."""
    if len(ids) <= max_length:
        return ids, labels
    image_positions = np.flatnonzero(ids == image_token_id)
    images_fit = len(image_positions) == 0 or image_positions[-1] < max_length
    supervised_left = bool((labels[1:max_length] != IGNORE_INDEX).any())
    if not (images_fit and supervised_left):
        why = "the image tokens" if not images_fit else "every answer"
        raise Skip("too_long", source, f"{len(ids)} tokens > {max_length}; a cut would drop {why}")
    return ids[:max_length], labels[:max_length]


def load_sample(
    record: Record, ids: np.ndarray, labels: np.ndarray, truncated: bool, image_processor: MiniGeminiImageProcessor
) -> dict[str, Any]:
    """A training item: ``input_ids``, ``labels``, the images' tensors (an image that does not decode raises an
    ``unreadable_image`` ``Skip``), the record's ``source``, and ``truncated`` when the ids were cut to max_length
    (the collator counts it)."""
    source = record.source
    item: dict[str, Any] = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels), "source": source}
    if truncated:
        item["truncated"] = True
    if record.images:
        try:
            pixels = image_processor(record.images, return_tensors="pt")
            item.update(pixel_values=pixels["pixel_values"], high_res_pixel_values=pixels["high_res_pixel_values"])
        except (ImageLoadError, OSError) as err:
            raise Skip("unreadable_image", source, str(err)) from None
    return item


def _images_decode(record: Record, skips) -> bool:
    """Whether every image of ``record`` decodes; one that does not is counted as its ``unreadable_image`` skip."""
    for image in record.images:
        try:
            load_image(image).load()
        except (ImageLoadError, OSError) as err:
            skips.add(Skip("unreadable_image", record.source, str(err)))
            return False
    return True


class SupervisedDataset(Dataset):
    """Map-style dataset of supervised conversations (text-only, one image or several per sample).

    Args:
        data_files: JSON array or JSON Lines file(s) in the LLaVA conversation format (see ``records``).
        processor: the model's ``MiniGeminiProcessor`` (tokenizer, image processor, visual tokens per image).
        image_folders: roots for relative image paths, first match wins (default: each data file's folder).
        template: release template name (``plain`` in stage 1) or None for the tokenizer's jinja template.
        max_length: longest sequence in tokens, visual tokens included.  Longer samples are truncated when the cut
            keeps every image token and at least one supervised token, and skipped (``too_long``) otherwise.
        image_processor: overrides the processor's (stage 1 uses one without pad-to-square, as the release did).
        verify_images: decode every image while reading (slow): a record with one that does not decode is skipped
            (``unreadable_image``) and named before training, not when a step draws it.

    Items: ``input_ids`` and ``labels`` (1-D int64), ``source``, ``truncated`` for a sample cut to max_length, plus
    ``pixel_values`` / ``high_res_pixel_values`` (one row per image) for samples with images; or the ``Skip`` of a
    sample whose image failed to decode.
    """

    def __init__(
        self,
        data_files: str | Sequence[str],
        processor: Any,
        image_folders: str | Sequence[str] | None = None,
        template: str | None = None,
        max_length: int = 2048,
        image_processor: MiniGeminiImageProcessor | None = None,
        verify_images: bool = False,
    ):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.encoder = ConversationEncoder(processor, template)
        self.image_processor = image_processor or processor.image_processor
        self.max_length = int(max_length)
        self.image_token_id = processor.image_token_id
        self._warned: set[str] = set()
        records, self.skips = read_records(data_files, image_folders)
        if verify_images:
            records = [record for record in records if _images_decode(record, self.skips)]
        self.records: list[Record] = []
        self.lengths: list[int] = []
        truncated = 0
        for start in range(0, len(records), _SCAN_BATCH):
            batch = records[start : start + _SCAN_BATCH]
            for record, (ids, labels) in zip(batch, self.encoder.encode_batch([r.messages for r in batch])):
                try:
                    kept, _ = fit_to_length(ids, labels, self.max_length, self.image_token_id, record.source)
                except Skip as skip:
                    self.skips.add(skip)
                    continue
                self.records.append(record)
                self.lengths.append(len(kept))
                truncated += len(kept) < len(ids)
        if not self.records:
            raise DataError(
                f"no usable training sample in {data_files}: {self.skips.total} record(s) skipped "
                f"({self.skips.describe()})"
            )
        logger.info(
            "training data: %d samples (%d with images), %d skipped (%s), %d truncated to %d tokens",
            len(self.records),
            sum(1 for r in self.records if r.images),
            self.skips.total,
            self.skips.describe(),
            truncated,
            self.max_length,
        )

    # ------------------------------------------------------------------------------------------ sizes

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_images(self) -> list[bool]:
        return [bool(r.images) for r in self.records]

    @property
    def modality_lengths(self) -> list[int]:
        """Token lengths, positive for samples with images and negative for text-only ones (for the sampler)."""
        return [n if r.images else -n for n, r in zip(self.lengths, self.records)]

    # ------------------------------------------------------------------------------------------ items

    def __getitem__(self, index: int) -> dict[str, Any] | Skip:
        record = self.records[index]
        ids, labels = self.encoder.encode(record.messages)
        kept, kept_labels = fit_to_length(ids, labels, self.max_length, self.image_token_id)  # kept when scanned
        try:
            return load_sample(record, kept, kept_labels, len(kept) < len(ids), self.image_processor)
        except Skip as skip:
            if skip.source not in self._warned:  # once per process, not once per epoch
                self._warned.add(skip.source)
                logger.warning("skipping %s (%s)", skip, skip.reason)
            return skip
