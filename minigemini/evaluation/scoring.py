"""The arithmetic every benchmark's scorer shares: a ratio that is None for an empty set, and means by group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["means", "ratio"]


def ratio(numerator: float, denominator: int) -> float | None:
    """numerator / denominator, or None for an empty set (a score of nothing is not 0)."""
    return numerator / denominator if denominator else None


def means(groups: Mapping[str, Sequence[float]], scale: float = 1.0) -> dict[str, float]:
    """``scale`` x the mean of each group, by group name in sorted order (the per-category figures)."""
    return {name: scale * sum(values) / len(values) for name, values in sorted(groups.items())}
