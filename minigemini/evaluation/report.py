"""What a scored run says about itself: how many questions the benchmark file holds, how many were scored, why
the others were not, and whether the score is complete, partial or absent.

Every question of the file ends in exactly one bucket::

    questions_in_file = scored + unreadable + left_out_by_limit + generation_errors + missing_predictions
                        + without_reference + needs_judge

``unparsed`` counts scored answers that the benchmark's rule could not read (scored as that rule says: wrong,
"yes" for POPE, a random option for MMMU); they are reported, they do not make a score partial.

Status: ``complete`` when every question was scored; ``unscored`` when nothing was scored only because the data
has no references or the benchmark needs a judge that was not given (predictions written, no number);
``partial`` otherwise -- ``mgm eval`` then says so on stderr and exits with ``PARTIAL_EXIT`` unless
``--allow-partial``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["COMPLETE", "PARTIAL", "PARTIAL_EXIT", "UNSCORED", "exit_status", "report_lines", "status", "tally"]

COMPLETE, PARTIAL, UNSCORED = "complete", "partial", "unscored"
PARTIAL_EXIT = 3
_DIGITS = 4

#: the buckets of questions that were not scored, with the words the report uses for them
NOT_SCORED = (
    ("unreadable", "unreadable rows (see scores.json problems.unreadable_rows)"),
    ("left_out_by_limit", "left out by --limit"),
    ("generation_errors", "generation errors (rerun with --retry-errors)"),
    ("missing_predictions", "without an answer yet (rerun the same command to answer them)"),
    ("without_reference", "without a reference answer in the data"),
    ("needs_judge", "waiting for an LLM judge (--judge-url/--judge-model)"),
)


def tally(
    *,
    in_file: int,
    scored: int,
    unparsed: int,
    unreadable: int,
    left_out_by_limit: int,
    generation_errors: int,
    missing_predictions: int,
    without_reference: int,
    needs_judge: int,
) -> dict[str, int]:
    """The ``counts`` of scores.json; raises ValueError when the buckets do not add up to ``in_file``."""
    counts = {
        "questions_in_file": in_file,
        "scored": scored,
        "unreadable": unreadable,
        "unparsed": unparsed,
        "left_out_by_limit": left_out_by_limit,
        "generation_errors": generation_errors,
        "missing_predictions": missing_predictions,
        "without_reference": without_reference,
        "needs_judge": needs_judge,
    }
    accounted = scored + sum(counts[key] for key, _ in NOT_SCORED)
    if accounted != in_file:
        raise ValueError(f"question counts do not add up: {accounted} accounted for, {in_file} in the file: {counts}")
    return counts


def status(counts: dict[str, int]) -> tuple[str, list[str]]:
    """(status, reasons): the reasons name each non-empty bucket of unscored questions."""
    reasons = [f"{counts[key]} {words}" for key, words in NOT_SCORED if counts.get(key)]
    if counts["scored"] == counts["questions_in_file"]:
        return COMPLETE, reasons
    if counts["scored"] == 0 and all(counts.get(key, 0) == 0 for key, _ in NOT_SCORED[:4]):
        return UNSCORED, reasons
    return PARTIAL, reasons


def _metric_text(metrics: dict[str, Any]) -> str:
    parts = []
    for name, value in metrics.items():
        parts.append(f"{name}={value:.{_DIGITS}g}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(parts) or "no metric"


def report_lines(scores: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(lines for stdout, lines for stderr) of a scores.json: the metrics, the counts, and the warning of a
    partial score."""
    counts = scores["counts"]
    state = scores["status"]
    label = f"{scores['benchmark']} (PARTIAL)" if state == PARTIAL else scores["benchmark"]
    tally_line = (
        f"questions in the file: {counts['questions_in_file']}, scored: {counts['scored']}, "
        f"unreadable: {counts['unreadable']}, unparsed: {counts['unparsed']}"
    )
    out = [f"{label}: {_metric_text(scores['metrics'])}", tally_line]
    err = []
    if scores.get("note"):
        err.append(f"mgm eval: note: {scores['note']}")
    reasons = "; ".join(scores.get("not_scored_because", []))
    if state == PARTIAL:
        missing = counts["questions_in_file"] - counts["scored"]
        err.append(
            f"mgm eval: PARTIAL SCORE: {missing} of {counts['questions_in_file']} questions of "
            f"{scores['benchmark']} were not scored ({reasons}); the score above is not comparable with published "
            "numbers"
        )
    elif state == UNSCORED:
        err.append(f"mgm eval: note: no score: {reasons}")
    return out, err


def exit_status(scores: dict[str, Any], allow_partial: bool) -> int:
    """0, or PARTIAL_EXIT for a partial score unless it is allowed."""
    return PARTIAL_EXIT if scores["status"] == PARTIAL and not allow_partial else 0
