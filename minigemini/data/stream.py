"""ShardStream: training samples streamed from shards, bounded in memory, disjoint per rank and worker, resumable exactly.

Every epoch has a *plan* that is a pure function of (seed, epoch, the shards' row counts), computed without reading
a byte of data:

1. the shards are shuffled (the same order on every rank) and dealt round-robin to the *readers*: reader
   ``rank * num_workers + worker``, so every rank and DataLoader worker reads its own shards and nothing else;
2. each reader walks its shards' rows in order through a shuffle buffer of ``buffer_size`` positions (seeded per
   reader and epoch) and takes the first ``quota`` positions it emits.  The quota is the same for every reader
   (what its fewest rows can give, in whole optimizer steps), so all ranks make the same number of steps; rows past
   it wait for another epoch (logged at the start);
3. optionally (``length_group``), each run of ``batch_size * length_group`` emitted samples is split by modality,
   sorted by length and cut into micro-batches whose order is shuffled: the release's modality-length grouping,
   within the window the stream has at hand.

Rows are read lazily, only as the plan reaches them, and held only while their position waits in the buffer, so memory
does not grow with the data.  Because the order is known without the data, resuming is arithmetic: after ``B``
micro-batches of this rank (the Trainer's global step times the accumulation), worker ``w`` of the DataLoader, which
hands out batches round-robin, had delivered ``ceil((B - w) / W)`` batches; each reader replays its plan that far on
positions alone, re-reads just the rows still waiting in its buffer, and the workers of the new DataLoader take the
places rotated by ``B mod W`` so that batch ``B`` comes first.  The samples after resuming are exactly those of an
uninterrupted run.

Bad input becomes its ``Skip`` in its place (the collator drops it, the trainer counts it): a row that is not a usable
record, too long, an image that does not decode, a shard that breaks mid-read (``unreadable_shard``, each lost row
named).  Skipped items keep their slot, so the plan, and resuming, stay exact.  The stream's own ``skips`` are those
found while opening the shards, before training: a skip met while reading is counted by the trainer alone, whether
the stream runs in DataLoader workers or in the main process.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from minigemini.data.dataset import fit_to_length, load_sample
from minigemini.data.labels import ConversationEncoder
from minigemini.data.records import DataError, check_record
from minigemini.data.shards import Broken, Shard, open_shards, read_shard, row_to_record
from minigemini.data.skips import Skip, SkipCounter
from minigemini.image_processing import MiniGeminiImageProcessor

__all__ = ["BufferShuffle", "ShardStream", "StreamLoader"]

logger = logging.getLogger(__name__)


class BufferShuffle:
    """Positions ``0..total-1`` through a shuffle buffer of ``size``: each new position replaces a random one of the
    buffer, which is emitted (webdataset's and ``datasets``' scheme).  ``pending`` (positions read, not yet emitted)
    and ``pushed`` describe the state after any number of ``next`` calls."""

    def __init__(self, total: int, size: int, rng: np.random.Generator):
        self.total, self.size, self.rng = total, max(1, size), rng
        self.buffer: list[int] = []
        self.pushed = 0

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        while self.pushed < self.total and len(self.buffer) < self.size:
            self.buffer.append(self.pushed)
            self.pushed += 1
        if not self.buffer:
            raise StopIteration
        index = int(self.rng.integers(len(self.buffer)))
        position = self.buffer[index]
        if self.pushed < self.total:
            self.buffer[index] = self.pushed
            self.pushed += 1
        else:
            self.buffer[index] = self.buffer[-1]
            self.buffer.pop()
        return position

    @property
    def pending(self) -> set[int]:
        return set(self.buffer)


class _Rows:
    """The rows of one reader's shards by position, read in order as the plan needs them and kept only while waiting.

    ``wanted``: positions before ``start`` that are still to come (a resumed buffer); rows between them that were
    already emitted are read past, not kept."""

    def __init__(self, shards: list[Shard], offsets: list[int], start: int, wanted: set[int]):
        self.shards, self.offsets, self.start, self.wanted = shards, offsets, start, wanted
        self.cache: dict[int, Any] = {}
        first = min(wanted | {start})
        self.rows = self._sequential(first)

    def _sequential(self, first: int) -> Iterator[tuple[int, Any]]:
        index = bisect.bisect_right(self.offsets, first) - 1
        row = first - self.offsets[index]
        for number in range(index, len(self.shards)):
            for row_number, raw in read_shard(self.shards[number], row):
                yield self.offsets[number] + row_number, raw
            row = 0

    def get(self, position: int) -> Any:
        while position not in self.cache:
            found, raw = next(self.rows)
            if found >= self.start or found in self.wanted:
                self.cache[found] = raw
        return self.cache.pop(position)

    def shard_of(self, position: int) -> tuple[Shard, int]:
        index = bisect.bisect_right(self.offsets, position) - 1
        return self.shards[index], position - self.offsets[index]


class ShardStream(IterableDataset):
    """Supervised samples from shards (see the module docstring), for a DataLoader with ``num_workers`` workers.

    Args:
        sources: shard folders, files, globs or ``hf:NAME`` (``shards.open_shards``).
        processor, template, max_length, image_processor: as ``SupervisedDataset``.
        batch_size, num_workers, accumulation_steps: the DataLoader's micro-batch and workers, and the accumulation,
            per rank (a rank's batches per epoch are then a whole number of optimizer steps).
        rank, world_size: this process among the training processes (default: ``torch.distributed`` or env).
        seed: the plan's seed (epoch ``e`` is seeded with ``(seed, e)``).
        buffer_size: shuffle buffer per reader, in samples.
        length_group: micro-batches per modality-length group (0: the buffer's order as is).
    """

    def __init__(
        self,
        sources: str | Sequence[str],
        processor: Any,
        template: str | None = None,
        max_length: int = 2048,
        image_processor: MiniGeminiImageProcessor | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        accumulation_steps: int = 1,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        buffer_size: int = 1000,
        length_group: int = 0,
    ):
        self.skips = SkipCounter()  # found while opening (e.g. a tar without a manifest that breaks off)
        self._log = SkipCounter()  # logs the first skips met while reading, in this process (the trainer counts them)
        self.shards = open_shards(sources, self.skips)
        self.encoder = ConversationEncoder(processor, template)
        self.image_processor = image_processor or processor.image_processor
        self.image_token_id = processor.image_token_id
        self.max_length = int(max_length)
        self.batch_size, self.num_workers, self.accumulation_steps = batch_size, num_workers, accumulation_steps
        if world_size is None:
            initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
            world_size = torch.distributed.get_world_size() if initialized else int(os.environ.get("WORLD_SIZE", "1"))
            rank = torch.distributed.get_rank() if initialized else int(os.environ.get("RANK", "0"))
        self.rank, self.world_size = int(rank or 0), int(world_size)
        self.seed, self.buffer_size, self.length_group = seed, buffer_size, length_group
        self.epoch = 0
        self.resume_batches = 0  # micro-batches of this rank already trained on (all epochs)

        self.readers = self.world_size * max(1, num_workers)
        if len(self.shards) < self.readers:
            raise DataError(
                f"{len(self.shards)} shard(s) for {self.readers} readers ({self.world_size} process(es) x "
                f"{max(1, num_workers)} DataLoader worker(s)): each reads its own shards; write smaller shards "
                "(mgm data shard --shard-size) or use fewer workers"
            )
        # Every reader gets at least floor(shards / readers) shards, whatever the epoch's order: the smallest that
        # many bound what every reader can give; a whole number of steps of it is each reader's quota.
        fewest = sum(sorted(s.rows for s in self.shards)[: len(self.shards) // self.readers])
        step = batch_size * accumulation_steps
        self.quota = fewest - fewest % step
        if self.quota == 0:
            raise DataError(
                f"the shards are too small for one optimizer step per reader ({fewest} samples for {step}); "
                "write larger shards or use fewer workers"
            )
        self.num_samples = sum(s.rows for s in self.shards)
        unused = self.num_samples - self.quota * self.readers
        logger.info(
            "streaming %d samples from %d shard(s): %d per epoch (%d readers x %d)%s",
            self.num_samples,
            len(self.shards),
            self.quota * self.readers,
            self.readers,
            self.quota,
            f"; {unused} wait for a later epoch (equal steps on every rank and worker)" if unused else "",
        )

    # ------------------------------------------------------------------------------------------ sizes and state

    def __len__(self) -> int:
        """Samples this rank takes per epoch (the DataLoader's length is this over the batch size)."""
        return self.quota * max(1, self.num_workers)

    @property
    def batches_per_epoch(self) -> int:
        return len(self) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, batches: int) -> None:
        """Continue after ``batches`` micro-batches of this rank (counted from the first epoch)."""
        self.resume_batches = int(batches)

    def _batches_done(self) -> int:
        """Micro-batches of this rank already trained on in the current epoch."""
        epoch, done = divmod(self.resume_batches, self.batches_per_epoch)
        return done if epoch == self.epoch else 0

    # ------------------------------------------------------------------------------------------ the plan

    def reader_shards(self, reader: int, epoch: int) -> list[Shard]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order[reader :: self.readers]]

    def _positions(self, reader: int, epoch: int, shards: list[Shard]) -> BufferShuffle:
        total = sum(s.rows for s in shards)
        return BufferShuffle(total, self.buffer_size, np.random.default_rng([self.seed, epoch, reader, 1]))

    def __iter__(self) -> Iterator[dict[str, Any] | Skip]:
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        if workers != max(1, self.num_workers):
            raise DataError(f"ShardStream was planned for {self.num_workers} workers but runs in {workers}")
        done = self._batches_done()
        slot = ((info.id if info is not None else 0) + done) % workers  # batch `done` comes from worker 0
        reader = self.rank * workers + slot
        skip = (done - slot + workers - 1) // workers * self.batch_size if done > slot else 0
        return self._reader_items(reader, self.epoch, skip)

    def _reader_items(self, reader: int, epoch: int, skip: int) -> Iterator[dict[str, Any] | Skip]:
        shards = self.reader_shards(reader, epoch)
        offsets = list(np.cumsum([0] + [s.rows for s in shards[:-1]]))
        positions = self._positions(reader, epoch, shards)
        group = self.batch_size * self.length_group if self.length_group else self.batch_size
        chunk_start = skip - skip % group
        for _ in range(chunk_start):  # replay the plan on positions alone
            next(positions)
        rows = _Rows(shards, offsets, positions.pushed, positions.pending)
        taken = chunk_start
        while taken < self.quota:
            size = min(group, self.quota - taken)
            chunk = self._encode([self._parse(rows, next(positions)) for _ in range(size)])
            if self.length_group:
                chunk = self._group(chunk, np.random.default_rng([self.seed, epoch, reader, 2, taken]))
            first = skip - taken if taken < skip else 0
            for encoded in chunk[first:]:
                yield self._item(encoded)
            taken += size

    def _parse(self, rows: _Rows, position: int) -> dict[str, Any] | Skip:
        """A planned position as {"source", "record"}, or its Skip."""
        shard, row = rows.shard_of(position)
        source = f"{shard.name}#{row}"
        raw = rows.get(position)
        try:
            if isinstance(raw, Broken):
                raise Skip("unreadable_shard", source, raw.detail)
            return {"source": source, "record": check_record(row_to_record(raw, shard), source, [])}
        except Skip as skip:
            return self._logged(skip)

    def _encode(self, chunk: list[dict[str, Any] | Skip]) -> list[dict[str, Any] | Skip]:
        """Token ids and labels for the chunk's records (one tokenizer call), or a ``too_long`` Skip in place."""
        usable = [i for i, sample in enumerate(chunk) if not isinstance(sample, Skip)]
        encoded = self.encoder.encode_batch([chunk[i]["record"].messages for i in usable]) if usable else []
        for i, (ids, labels) in zip(usable, encoded):
            sample = chunk[i]
            try:
                sample["ids"], sample["labels"] = fit_to_length(
                    ids, labels, self.max_length, self.image_token_id, sample["source"]
                )
            except Skip as skip:
                chunk[i] = self._logged(skip)
                continue
            sample["truncated"] = len(sample["ids"]) < len(ids)
        return chunk

    def _logged(self, skip: Skip) -> Skip:
        self._log.add(skip)  # this process's log; the trainer counts the items
        return skip

    def _group(self, chunk: list[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
        """Split by modality, sort by length, cut into micro-batches, shuffle their order (skips sort last)."""

        def key(sample):
            if isinstance(sample, Skip):
                return (2, 0)
            return (0 if sample["record"].images else 1, -len(sample["ids"]))

        ordered = sorted(chunk, key=key)
        batches = [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        return [sample for j in rng.permutation(len(batches)) for sample in batches[j]]

    def _item(self, encoded: dict[str, Any] | Skip) -> dict[str, Any] | Skip:
        if isinstance(encoded, Skip):
            return encoded
        record = encoded["record"]
        try:
            return load_sample(record, encoded["ids"], encoded["labels"], encoded["truncated"], self.image_processor)
        except Skip as skip:
            return self._logged(skip)

    def loader(self, collate_fn, **kwargs) -> StreamLoader:
        """The DataLoader this stream was planned for (its batch size and workers)."""
        return StreamLoader(
            self, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_fn, **kwargs
        )


class StreamLoader(DataLoader):
    """A DataLoader over a ShardStream that passes ``set_epoch`` on (the Trainer calls it each epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
