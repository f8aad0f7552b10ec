"""Counting what went wrong in a data tool run, keeping the first few examples of each kind for the report."""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["Problems"]


class Problems:
    """Counts by kind (``missing_image``, ``bad_json``, ``endpoint_error``...) with up to ``keep`` examples each."""

    def __init__(self, keep: int = 3):
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.keep = keep

    def add(self, kind: str, example: str = "", count: int = 1) -> None:
        self.counts[kind] += count
        kept = self.examples.setdefault(kind, [])
        if example and len(kept) < self.keep:
            kept.append(example)

    def merge(self, counts: dict[str, int], examples: dict[str, list[str]] | None = None) -> None:
        for kind, count in counts.items():
            if count:
                self.counts[kind] += int(count)
        for kind, kept in (examples or {}).items():
            mine = self.examples.setdefault(kind, [])
            mine.extend(kept[: max(0, self.keep - len(mine))])

    def __getitem__(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def __bool__(self) -> bool:
        return bool(+self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            kind: {"count": count, "examples": self.examples.get(kind, [])}
            for kind, count in sorted(self.counts.items())
            if count
        }

    def describe(self, indent: str = "  ") -> str:
        """One line per kind: ``kind: count (e.g. first example)``; empty string when nothing went wrong."""
        lines = []
        for kind, count in sorted(self.counts.items()):
            if count:
                kept = self.examples.get(kind)
                lines.append(f"{indent}{kind}: {count}" + (f" (e.g. {kept[0]})" if kept else ""))
        return "\n".join(lines)
