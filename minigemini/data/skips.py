"""One skip shape and one skip counter, from where a sample is left out to where it is reported.

``Skip`` is raised where a sample turns out unusable (a record that breaks the format, a cut that would drop its
image tokens, an image that does not decode, a reply that breaks the generation format...) and carries its reason,
the sample it is about and a detail.  It travels unchanged: a dataset hands it out in the sample's place, the
collator puts it in the batch's ``data_stats``, the trainer counts it.  ``SkipCounter`` counts skips by reason and
keeps (and, for training, logs) the first few of each: training data, ``mgm data`` tools and their reports all use it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["SKIP_REASONS", "Skip", "SkipCounter"]

logger = logging.getLogger(__name__)

#: Why a training record may be skipped (the keys of the training summary's skip counts).
SKIP_REASONS = {
    "bad_json": "the line is not valid JSON",
    "bad_record": "not a conversation record (wrong types or roles)",
    "empty_conversation": "no user turn or no non-empty assistant answer",
    "image_count_mismatch": "<image> placeholders do not match the record's images",
    "bad_image_path": "an image path leaves the image folder (../), or is absolute where image folders are given",
    "missing_image": "an image file was not found under the image folders",
    "unreadable_image": "an image file could not be decoded",
    "too_long": "longer than max_length and truncation would cut image tokens or every answer",
    "unreadable_shard": "its shard is missing, truncated or corrupt from this sample on",
}


class Skip(Exception):
    """A sample left out: ``reason`` (a ``SKIP_REASONS`` key in training data), ``source`` (the sample: ``file:line``,
    ``file#record``, ``shard#row``, an item's origin) and ``detail`` (what is wrong, for people)."""

    def __init__(self, reason: str, source: str = "", detail: str = ""):
        super().__init__(reason, source, detail)  # args: pickled as is (DataLoader workers hand skips on)
        self.reason, self.source, self.detail = reason, source, detail

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.detail) if part)


class SkipCounter:
    """Skips counted by reason, with the first ``keep`` examples (``source: detail``) of each; the first
    ``log_first`` of each reason are logged as warnings (0: none), later ones only counted."""

    def __init__(self, log_first: int = 5, keep: int = 3):
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.log_first, self.keep = log_first, keep

    def add(self, skip: Skip) -> None:
        self.counts[skip.reason] += 1
        self._keep(skip.reason, [str(skip)])
        if self.counts[skip.reason] <= self.log_first:
            logger.warning("skipping %s (%s)", skip, skip.reason)
        elif self.log_first and self.counts[skip.reason] == self.log_first + 1:
            logger.warning("further '%s' skips are counted but not logged", skip.reason)

    def _keep(self, reason: str, examples: list[str]) -> None:
        kept = self.examples.setdefault(reason, [])
        kept.extend([e for e in examples if e][: max(0, self.keep - len(kept))])

    def merge(self, counts: Mapping[str, int], examples: Mapping[str, list[str]] | None = None) -> None:
        """Add counts by reason (another run's, a worker's, a shard's) and their examples."""
        self.counts.update({reason: int(count) for reason, count in counts.items() if count})
        for reason, kept in (examples or {}).items():
            self._keep(reason, list(kept))

    @classmethod
    def from_report(cls, report: Mapping[str, Mapping[str, Any]], keep: int = 3) -> SkipCounter:
        """The counter back from its ``report()``."""
        counter = cls(log_first=0, keep=keep)
        counter.merge({r: e["count"] for r, e in report.items()}, {r: e["examples"] for r, e in report.items()})
        return counter

    def __getitem__(self, reason: str) -> int:
        return self.counts.get(reason, 0)

    def __bool__(self) -> bool:
        return bool(+self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        """Counts by reason."""
        return {reason: count for reason, count in sorted(self.counts.items()) if count}

    def report(self) -> dict[str, dict[str, Any]]:
        """Counts by reason with their examples: ``{reason: {"count", "examples"}}`` (the tools' JSON reports)."""
        counts = self.as_dict()
        return {reason: {"count": count, "examples": self.examples.get(reason, [])} for reason, count in counts.items()}

    def lines(self) -> list[str]:
        """``reason: count (e.g. first example)`` for each reason."""
        return [
            f"{reason}: {count}" + (f" (e.g. {self.examples[reason][0]})" if self.examples.get(reason) else "")
            for reason, count in self.as_dict().items()
        ]

    def describe(self) -> str:
        """The lines in one line (``none`` when nothing was skipped)."""
        return "; ".join(self.lines()) or "none"
