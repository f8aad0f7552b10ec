"""Which questions a run in an output folder stands for, under the loaders of this version.

A manifest written with the current ``RULES_VERSION`` lists its shard's questions (``qids``), the unreadable rows
and the number of questions in the benchmark file, and the prediction records carry the gold answers and meta
that the scorer needs: scoring reads nothing else.

A manifest written before (no ``rules_version``, or an older one), or any run when a re-score is asked for, is
re-read from the benchmark data it names, so that a loader fix applies to runs already made without generating
again: answers already given are joined to the current questions by ``qid`` and scored with the current gold
and meta; questions the old loader dropped (TextVQA's second question on an image, ...) appear as missing
predictions -- rerunning the same ``mgm eval`` command answers only those.  When the data is gone, the run is
counted from its own manifest and the report says so.

Bump ``RULES_VERSION`` whenever a loader changes which questions a file holds, their ``qid``, gold or meta.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, load_all
from minigemini.evaluation.samples import EvalError, Sample

__all__ = ["RULES_VERSION", "RunQuestions", "run_questions"]

#: 1: the first loaders (no version in the manifest); 2: one question per row for TextVQA (shared image ids),
#: POPE labels by position, MME from LLaVA's question file, strict id joins, SEED's data type, ScienceQA's
#: references from problems.json.
RULES_VERSION = 2


@dataclasses.dataclass
class RunQuestions:
    """order: the qids the run stands for, in benchmark order; invalid: unreadable rows (JSON); in_file: the
    questions of the benchmark file; samples: the questions as the current loader reads them (None when the
    manifests are trusted as they are); note: what the report should say about how this was decided."""

    order: list[str]
    invalid: list[dict[str, Any]]
    in_file: int
    left_out_by_limit: int
    samples: dict[str, Sample] | None = None
    note: str | None = None


def _is_current(manifests: list[dict[str, Any]]) -> bool:
    return all(m.get("rules_version") == RULES_VERSION and "questions_in_file" in m for m in manifests)


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({json.dumps(row, sort_keys=True): row for row in rows}.values())


def from_manifests(manifests: list[dict[str, Any]]) -> RunQuestions:
    """The questions the manifests list (shards are strided: the k-th of shard i is question i + k*n)."""
    count = manifests[0]["shard"][1]
    positioned = [
        (position * count + manifest["shard"][0], qid)
        for manifest in manifests
        for position, qid in enumerate(manifest["qids"])
    ]
    order = [qid for _, qid in sorted(positioned)]
    invalid = _unique([row for manifest in manifests for row in manifest["invalid"]])
    in_file = manifests[0].get("questions_in_file")
    if in_file is None:  # written before the count was recorded: what the run saw
        return RunQuestions(order, invalid, len(order) + len(invalid), 0)
    return RunQuestions(order, invalid, in_file, manifests[0].get("left_out_by_limit", 0))


def from_data(benchmark: Benchmark, manifest: dict[str, Any]) -> RunQuestions:
    """The questions of the benchmark data a manifest names, read with the current loader."""
    options = LoadOptions.create(
        manifest["data"], manifest.get("image_dir"), manifest.get("annotations"), manifest.get("split")
    )
    samples, invalid = load_all(benchmark, options)
    limit = manifest.get("limit")
    selected = samples if limit is None else samples[:limit]
    return RunQuestions(
        order=[s.qid for s in selected],
        invalid=[row.to_json() for row in invalid],
        in_file=len(samples) + len(invalid),
        left_out_by_limit=len(samples) - len(selected),
        samples={s.qid: s for s in selected},
    )


def _data_present(manifest: dict[str, Any]) -> bool:
    paths = [manifest.get("data"), manifest.get("annotations")]
    return manifest.get("data") is not None and all(p is None or Path(p).exists() for p in paths)


def run_questions(benchmark: Benchmark, manifests: list[dict[str, Any]], rescore: bool = False) -> RunQuestions:
    """The questions a run stands for (see the module docstring); ``rescore`` re-reads the data even when the
    manifests are current (an EvalError when it is not there)."""
    if _is_current(manifests) and not rescore:
        return from_manifests(manifests)
    manifest = manifests[0]
    if _data_present(manifest):
        questions = from_data(benchmark, manifest)
        if not _is_current(manifests):
            questions.note = (
                f"this run was written by an older version (rules {manifest.get('rules_version', 1)}, now "
                f"{RULES_VERSION}): its answers were re-scored against {manifest['data']} as read now"
            )
        return questions
    if rescore:
        raise EvalError(f"cannot re-score: the benchmark data of this run is not there ({manifest.get('data')})")
    questions = from_manifests(manifests)
    questions.note = (
        f"this run was written by an older version and its benchmark data ({manifest.get('data')}) is not there to "
        "re-read: questions are counted from its manifest, where the old loader may have left some out (see the "
        "unreadable rows)"
    )
    return questions
