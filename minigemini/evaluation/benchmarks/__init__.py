"""The benchmarks ``mgm eval --bench NAME`` knows: one module per benchmark family, each declaring its
``BENCHMARKS`` (name, loader, scorer), and this registry of the modules.

A new benchmark is one module here (a row reader for ``loader.load_rows``, a scorer, ``BENCHMARKS``) plus its
entry in ``MODULES``.  How each is read and scored, and where that rule comes from: ``../README.md``.
"""

from __future__ import annotations

from minigemini.evaluation.benchmarks import (
    ai2d,
    chartqa,
    custom,
    docvqa,
    hallusionbench,
    mathvista,
    mmbench,
    mme,
    mmmu,
    mmstar,
    mmvet,
    ocrbench,
    pope,
    realworldqa,
    scienceqa,
    seed,
    synthetic,
    textvqa,
    vqa,
)
from minigemini.evaluation.loader import Benchmark

__all__ = ["BENCHMARKS", "MODULES", "get_benchmark"]

#: The registry, in the order ``mgm eval list`` shows the benchmarks.
MODULES = (
    textvqa,
    vqa,
    pope,
    mme,
    mmbench,
    scienceqa,
    seed,
    mmmu,
    mathvista,
    mmvet,
    docvqa,
    chartqa,
    ocrbench,
    ai2d,
    mmstar,
    hallusionbench,
    realworldqa,
    custom,
    synthetic,
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for module in MODULES for b in module.BENCHMARKS}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None
