"""The modality + length grouped sampler."""

from __future__ import annotations

import random

import pytest
import torch

from minigemini.data import ModalityLengthGroupedSampler, modality_length_grouped_indices


def make_lengths(num_image=37, num_text=23, seed=0):
    rng = random.Random(seed)
    lengths = [rng.randint(100, 900) for _ in range(num_image)] + [-rng.randint(5, 300) for _ in range(num_text)]
    rng.shuffle(lengths)
    return lengths


def micro_batches(order, batch_size):
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def test_every_sample_once_and_pure_micro_batches():
    lengths = make_lengths()
    batch_size, world, accumulation = 2, 2, 2
    order = list(ModalityLengthGroupedSampler(lengths, batch_size, world, accumulation, seed=3))
    assert sorted(order) == list(range(len(lengths)))
    group = batch_size * world * accumulation
    full_groups = (37 // group + 23 // group) * group
    for batch in micro_batches(order[:full_groups], batch_size):
        assert len({lengths[i] > 0 for i in batch}) == 1, "a micro-batch mixes image and text-only samples"
    # only the merged tail group may hold both modalities
    mixed = [b for b in micro_batches(order, batch_size) if len({lengths[i] > 0 for i in b}) > 1]
    assert len(mixed) <= 1


def test_micro_batches_hold_neighbouring_lengths():
    lengths = make_lengths(64, 0)
    batch_size = 4
    order = modality_length_grouped_indices(
        lengths, batch_size, world_size=1, accumulation_steps=4, generator=torch.Generator().manual_seed(0)
    )
    for start in range(0, len(order), 16):
        group = order[start : start + 16]
        ranked = sorted(group, key=lambda i: -lengths[i])
        for batch in micro_batches(group, batch_size):  # each micro-batch is a run of the group's sorted lengths
            positions = sorted(ranked.index(i) for i in batch)
            assert positions == list(range(positions[0], positions[0] + batch_size))


def test_seeded_per_epoch_and_the_same_on_every_rank():
    lengths = make_lengths()
    sampler = ModalityLengthGroupedSampler(lengths, 4, seed=1)
    first, again = list(sampler), list(ModalityLengthGroupedSampler(lengths, 4, seed=1))
    assert first == again
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == sorted(first)


@pytest.mark.parametrize("length_group_steps", [1, 3])
@pytest.mark.parametrize("split", [(4, 1, 1), (2, 2, 1), (1, 2, 2), (1, 1, 4)])
def test_each_step_sees_the_same_samples_however_the_global_batch_is_split(split, length_group_steps):
    lengths = make_lengths(41, 23)  # tails of 1 and 3 samples form a mixed last group
    batch_size, world, accumulation = split
    order = modality_length_grouped_indices(
        lengths, batch_size, world, accumulation, torch.Generator().manual_seed(7), length_group_steps
    )
    reference = modality_length_grouped_indices(lengths, 4, 1, 1, torch.Generator().manual_seed(7), length_group_steps)
    steps = [sorted(order[i : i + 4]) for i in range(0, len(order), 4)]
    assert steps == [sorted(reference[i : i + 4]) for i in range(0, len(reference), 4)]


def padded_tokens(order, lengths, batch_size):
    return sum(max(abs(lengths[i]) for i in batch) * len(batch) for batch in micro_batches(order, batch_size))


def test_grouping_several_steps_by_length_cuts_padding_and_keeps_every_sample_once():
    lengths = make_lengths(400, 160)
    per_step = modality_length_grouped_indices(lengths, 8, generator=torch.Generator().manual_seed(5))
    grouped = modality_length_grouped_indices(
        lengths, 8, generator=torch.Generator().manual_seed(5), length_group_steps=16
    )
    sampler = list(ModalityLengthGroupedSampler(lengths, 8, seed=5, length_group_steps=16))
    assert sampler == grouped and sorted(grouped) == list(range(len(lengths)))
    assert padded_tokens(grouped, lengths, 8) < 0.9 * padded_tokens(per_step, lengths, 8)
    for batch in micro_batches(grouped[: (400 // 8 + 160 // 8) * 8], 8):
        assert len({lengths[i] > 0 for i in batch}) == 1, "a micro-batch mixes image and text-only samples"
    # steps are still shuffled: the first steps are not simply the shortest ones
    firsts = [abs(lengths[batch[0]]) for batch in micro_batches(grouped, 8)[:20]]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def test_zero_length_is_refused():
    with pytest.raises(ValueError, match="non-zero"):
        modality_length_grouped_indices([3, 0, -2], 2)
    with pytest.raises(ValueError, match="length_group_steps must be >= 1"):
        modality_length_grouped_indices([3, 2], 2, length_group_steps=0)
    with pytest.raises(ValueError, match="length_group_steps must be >= 1"):
        ModalityLengthGroupedSampler([3, 2], 2, length_group_steps=0)
