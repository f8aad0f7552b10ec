"""A sampler that keeps each micro-batch to one modality and to similar lengths.

Why: a micro-batch mixing image samples (hundreds of visual tokens) with short text-only samples pads the text ones
to the image length, and a text-only micro-batch skips both vision encoders entirely.  So, per epoch:

1. shuffle the image samples and the text-only samples separately (seeded: every rank draws the same order);
2. cut each into *step groups* of ``batch_size * num_micro_batches`` samples (one optimizer step over every rank and
   accumulation step); groups are single-modality, only the two leftover tails are merged into a final mixed group.
   With ``length_group_steps`` k > 1, each run of k steps' samples is first sorted by length, so a step holds
   neighbouring lengths even when it holds few samples (a CPU run with 8 a step pads 13 % of its tokens otherwise);
3. shuffle the order of the full groups;
4. inside a group, sort by length and cut it into consecutive micro-batches of ``batch_size`` (similar lengths, little
   padding), laid out so that the ranks get similar amounts of work.

The DataLoader slices the index stream into micro-batches of ``batch_size`` and a distributed run hands micro-batch
``j`` to rank ``j % world_size``, so each group is exactly one optimizer step; which samples make up a step does not
depend on how the global batch is split into ranks and accumulation steps (same seed, same steps).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["ModalityLengthGroupedSampler", "modality_length_grouped_indices"]


def _arrange_group(group: list[int], lengths: Sequence[int], batch_size: int, world_size: int) -> list[int]:
    """Sort a step group by length, cut it into micro-batches, and order them so the ranks' work is balanced."""
    ordered = sorted(group, key=lambda i: abs(lengths[i]), reverse=True)
    micro = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    if len(micro) <= 1 or world_size <= 1 or len(micro) % world_size:
        return [i for batch in micro for i in batch]
    # Micro-batch k of a round of `world_size` goes to rank k; reversing every other round (a snake) gives each rank
    # a mix of the longest and the shortest micro-batches.
    rounds = [micro[i : i + world_size] for i in range(0, len(micro), world_size)]
    arranged = []
    for number, round_ in enumerate(rounds):
        arranged.extend(reversed(round_) if number % 2 else round_)
    return [i for batch in arranged for i in batch]


def modality_length_grouped_indices(
    lengths: Sequence[int],
    batch_size: int,
    world_size: int = 1,
    accumulation_steps: int = 1,
    generator: torch.Generator | None = None,
    length_group_steps: int = 1,
) -> list[int]:
    """One epoch's order.  ``lengths``: positive for samples with images, negative for text-only (never 0);
    ``length_group_steps``: how many steps' samples are sorted by length together before being cut into steps."""
    if any(length == 0 for length in lengths):
        raise ValueError("lengths must be non-zero: positive for image samples, negative for text-only samples")
    if length_group_steps < 1:
        raise ValueError(f"length_group_steps must be >= 1, got {length_group_steps}")
    group_size = batch_size * world_size * accumulation_steps
    span = group_size * length_group_steps
    full_groups: list[list[int]] = []
    leftovers: list[int] = []
    for keep in (lambda n: n > 0, lambda n: n < 0):
        indices = [i for i, n in enumerate(lengths) if keep(n)]
        if not indices:
            continue
        shuffled = [indices[j] for j in torch.randperm(len(indices), generator=generator).tolist()]
        cut = len(shuffled) - len(shuffled) % group_size
        for start in range(0, cut, span):
            run = sorted(shuffled[start : min(start + span, cut)], key=lambda i: abs(lengths[i]))
            full_groups.extend(run[i : i + group_size] for i in range(0, len(run), group_size))
        leftovers.extend(shuffled[cut:])
    order = torch.randperm(len(full_groups), generator=generator).tolist()
    groups = [full_groups[j] for j in order]
    # The tails: keep modalities apart inside the merged group (images first), so micro-batches stay pure when possible.
    leftovers.sort(key=lambda i: (lengths[i] < 0, -abs(lengths[i])))
    groups.extend(leftovers[i : i + group_size] for i in range(0, len(leftovers), group_size))
    return [i for group in groups for i in _arrange_group(group, lengths, batch_size, world_size)]


class ModalityLengthGroupedSampler(Sampler[int]):
    """Sampler over ``modality_length_grouped_indices`` (same order on every rank; ``set_epoch`` reshuffles).

    Args:
        lengths: per-sample lengths, positive with images, negative text-only (``SupervisedDataset.modality_lengths``).
        batch_size: per-device micro-batch size.
        world_size, accumulation_steps: ranks and gradient-accumulation steps per optimizer step.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        length_group_steps: steps whose samples are sorted by length together (1: each step on its own).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        accumulation_steps: int = 1,
        seed: int = 0,
        length_group_steps: int = 1,
    ):
        if batch_size < 1 or world_size < 1 or accumulation_steps < 1 or length_group_steps < 1:
            raise ValueError("batch_size, world_size, accumulation_steps and length_group_steps must be >= 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.accumulation_steps = accumulation_steps
        self.seed = seed
        self.length_group_steps = length_group_steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(
            modality_length_grouped_indices(
                self.lengths,
                self.batch_size,
                self.world_size,
                self.accumulation_steps,
                generator,
                self.length_group_steps,
            )
        )
