"""Running a model over a benchmark: batched greedy generation, a resumable JSONL of answers, shards, merge
and scoring.

Layout of an output folder (``--out``)::

    manifest[.shard-I-of-N].json     what was run: benchmark, data, limit, the shard's question ids, unreadable rows
    predictions[.shard-I-of-N].jsonl one line per question: qid, prediction (or error), prompt, gold, meta
    scores.json                      metrics + counts of everything that was not scored normally
    judge-cache.jsonl                replies of the LLM judge, when one is used

A run appends one line per answered question and flushes it, so an interrupted run loses at most the batch
in flight; run again with the same arguments and only the remaining questions are asked.  Shards are
strided (question k goes to shard k mod N); ``merge`` joins them and scores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from minigemini.evaluation.benchmarks import get_benchmark
from minigemini.evaluation.loader import Benchmark, LoadOptions, load_all
from minigemini.evaluation.report import status, tally
from minigemini.evaluation.rescore import RULES_VERSION, run_questions
from minigemini.evaluation.samples import AnswerError, EvalError, InvalidRow, Sample, prediction_record
from minigemini.image_processing import ImageLoadError, load_image

__all__ = [
    "EvalError",
    "RunConfig",
    "load_samples",
    "parse_shard",
    "read_all_predictions",
    "read_predictions",
    "run_benchmark",
    "run_engine",
    "score_run",
    "shard_from_env",
]

PROBLEMS_LISTED = 100  # per kind, in scores.json


@dataclasses.dataclass
class RunConfig:
    bench: str
    data: str
    out: Path
    annotations: str | None = None
    image_dir: str | None = None
    split: str | None = None
    limit: int | None = None
    shard: tuple[int, int] = (0, 1)
    batch_size: int = 8
    max_new_tokens: int | None = None
    model: str | None = None
    retry_errors: bool = False
    engine: str = "transformers"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise EvalError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise EvalError(f"--shard {text}: need 0 <= i < n")
    return index, count


def shard_from_env() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return (rank, world) if world > 1 else (0, 1)


def _tag(shard: tuple[int, int]) -> str:
    return "" if shard[1] == 1 else f".shard-{shard[0]}-of-{shard[1]}"


def load_samples(
    benchmark: Benchmark, options: LoadOptions, limit: int | None = None
) -> tuple[list[Sample], list[InvalidRow]]:
    """All samples of the benchmark (the first ``limit`` when given) and the rows that could not be read."""
    samples, invalid = load_all(benchmark, options)
    return (samples if limit is None else samples[:limit]), invalid


def read_predictions(path: Path, repair: bool = False) -> dict[str, dict]:
    """qid -> record of a predictions file.  A last line cut by an interruption is ignored (and removed
    from the file when ``repair``, so that appending starts on a fresh line)."""
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    with open(path, "rb") as handle:
        data = handle.read()
    complete = data.rfind(b"\n") + 1
    if repair and complete < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(complete)
    for line in data[:complete].splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "qid" in record:
            records[str(record["qid"])] = record
    return records


def _prefer(old: dict | None, new: dict) -> dict:
    """Of two records of one question, an answer beats an error; otherwise the later one wins."""
    if old is not None and "prediction" in old and "prediction" not in new:
        return old
    return new


def read_all_predictions(out: Path) -> dict[str, dict]:
    """qid -> record over every predictions*.jsonl of an output folder (shards, the merged file), an answer
    preferred to an error: a question answered in any shard's file is answered."""
    records: dict[str, dict] = {}
    for path in sorted(Path(out).glob("predictions*.jsonl")):
        for qid, record in read_predictions(path).items():
            records[qid] = _prefer(records.get(qid), record)
    return records


def _write_json(path: Path, data: Any) -> None:
    """Write atomically (temporary file + rename): a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def _manifest(
    config: RunConfig, samples: list[Sample], invalid: list[InvalidRow], in_file: int, left_out_by_limit: int
) -> dict[str, Any]:
    return {
        "benchmark": config.bench,
        "rules_version": RULES_VERSION,
        "data": str(Path(config.data).expanduser().resolve()),
        "annotations": None if config.annotations is None else str(Path(config.annotations).expanduser().resolve()),
        "image_dir": None if config.image_dir is None else str(Path(config.image_dir).expanduser().resolve()),
        "split": config.split,
        "limit": config.limit,
        "shard": list(config.shard),
        "model": config.model,
        "engine": config.engine,
        "questions_in_file": in_file,
        "left_out_by_limit": left_out_by_limit,
        "qids": [s.qid for s in samples],
        "invalid": [row.to_json() for row in invalid],
    }


def _check_manifest(path: Path, new: dict[str, Any]) -> None:
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        old = json.load(handle)
    for key in ("benchmark", "data", "annotations", "split", "shard"):
        if old.get(key) != new.get(key):
            raise EvalError(
                f"{path.parent} holds a run with {key}={old.get(key)!r}, not {new.get(key)!r}; "
                "use another --out folder (or delete that one) rather than mixing runs"
            )


def _load_images(sample: Sample, max_pixels: int | None):
    return [load_image(image, max_pixels=max_pixels) for image in sample.images]


AnswerFn = Callable[[Any, Any, Sequence[tuple[Any, str]], int], list[str]]


def _default_answer_fn(model, processor, batch, max_new_tokens):
    from minigemini.evaluation.answering import generate_answers

    return generate_answers(model, processor, batch, max_new_tokens=max_new_tokens)


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _start(config: RunConfig) -> tuple[list[Sample], list[InvalidRow]]:
    """This shard's questions and the unreadable rows of the file; writes (or checks) the shard's manifest."""
    benchmark = get_benchmark(config.bench)
    options = LoadOptions.create(config.data, config.image_dir, config.annotations, config.split)
    everything, invalid = load_all(benchmark, options)
    if invalid and not everything:
        raise EvalError(
            f"{options.data.name}: no row is a {benchmark.name} question ({invalid[0].where}: {invalid[0].reason})"
        )
    samples = everything if config.limit is None else everything[: config.limit]
    index, count = config.shard
    shard_samples = samples[index::count]
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(config, shard_samples, invalid, len(everything) + len(invalid), len(everything) - len(samples))
    path = out / f"manifest{_tag(config.shard)}.json"
    _check_manifest(path, manifest)
    _write_json(path, manifest)
    return shard_samples, invalid


def _to_answer(samples: list[Sample], predictions_path: Path, retry_errors: bool) -> list[Sample]:
    """The questions of ``samples`` that no predictions file of the folder answers yet."""
    read_predictions(predictions_path, repair=True)  # a line cut by an interruption goes before appending
    done = read_all_predictions(predictions_path.parent)  # an answer in another shard's file counts
    finished = {qid for qid, r in done.items() if "prediction" in r or not retry_errors}
    return [s for s in samples if s.qid not in finished]


def _answer_chunk(
    chunk: list[Sample], answer_fn: AnswerFn, model, processor, max_new_tokens: int, max_pixels: int | None
) -> list[dict[str, Any]]:
    """The prediction records of a batch: an image that does not load is an error record (first), and a batch
    the model refuses (a ValueError: e.g. a prompt longer than its context) is asked again one by one, so that
    only the culprit fails."""
    records, ready = [], []
    for sample in chunk:
        try:
            ready.append((sample, _load_images(sample, max_pixels)))
        except ImageLoadError as error:
            records.append(prediction_record(sample, error=f"image: {error}"))
    if not ready:
        return records
    try:
        texts = answer_fn(model, processor, [(images, s.prompt) for s, images in ready], max_new_tokens)
    except ValueError:
        return records + [_answer_one(s, images, answer_fn, model, processor, max_new_tokens) for s, images in ready]
    return records + [_record(s, t) for (s, _), t in zip(ready, texts)]


def _record(sample: Sample, answer: str | AnswerError) -> dict[str, Any]:
    if isinstance(answer, AnswerError):
        return prediction_record(sample, error=str(answer))
    return prediction_record(sample, prediction=answer)


def _answer_one(sample: Sample, images: list, answer_fn: AnswerFn, model, processor, max_new_tokens: int) -> dict:
    try:
        return _record(sample, answer_fn(model, processor, [(images, sample.prompt)], max_new_tokens)[0])
    except ValueError as error:
        return prediction_record(sample, error=f"generation: {error}")


def run_benchmark(
    model,
    processor,
    config: RunConfig,
    answer_fn: AnswerFn | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Answer every question of this shard that the predictions file does not have yet.

    Returns a summary: questions in the shard, answered before, answered now, errors now, unreadable rows.
    ``answer_fn(model, processor, batch, max_new_tokens)`` defaults to ``generate_answers``.
    """
    answer_fn = answer_fn or _default_answer_fn
    log = log or _log_to_stderr
    shard_samples, invalid = _start(config)
    name = f"{config.bench}{_tag(config.shard)}"
    predictions_path = Path(config.out) / f"predictions{_tag(config.shard)}.jsonl"
    todo = _to_answer(shard_samples, predictions_path, config.retry_errors)
    max_new_tokens = config.max_new_tokens or get_benchmark(config.bench).max_new_tokens
    max_pixels = getattr(getattr(processor, "image_processor", None), "max_image_pixels", None)
    log(
        f"[{name}] {len(shard_samples)} questions, {len(shard_samples) - len(todo)} already answered, "
        f"{len(todo)} to go; {len(invalid)} unreadable rows"
    )
    answered = errors = 0
    started = last_log = time.monotonic()
    with open(predictions_path, "a", encoding="utf-8") as handle:
        for start in range(0, len(todo), max(1, config.batch_size)):
            chunk = todo[start : start + config.batch_size]
            for record in _answer_chunk(chunk, answer_fn, model, processor, max_new_tokens, max_pixels):
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                handle.flush()
                answered += "error" not in record
                errors += "error" in record
            now = time.monotonic()
            if now - last_log > 10 or start + config.batch_size >= len(todo):
                rate = (answered + errors) / max(now - started, 1e-9)
                log(f"[{name}] {answered + errors}/{len(todo)} ({rate:.2f} questions/s)")
                last_log = now
    return {
        "questions": len(shard_samples),
        "answered_before": len(shard_samples) - len(todo),
        "answered": answered,
        "errors": errors,
        "invalid_rows": len(invalid),
        "predictions": str(predictions_path),
    }


def run_engine(engine, config: RunConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``run_benchmark`` with the answers of ``engine`` (``engines.Engine``), handed ``config.batch_size`` questions
    at a time."""

    def answer_fn(model, processor, batch, max_new_tokens):
        return engine.answer(batch, max_new_tokens)

    return run_benchmark(engine.model, engine.processor, config, answer_fn=answer_fn, log=log)


def _manifests(out: Path) -> list[dict[str, Any]]:
    manifests = []
    for path in sorted(out.glob("manifest*.json")):
        with open(path, encoding="utf-8") as handle:
            manifests.append(json.load(handle))
    if not manifests:
        raise EvalError(f"no manifest*.json in {out}: not an `mgm eval` output folder")
    return manifests


def shards_complete(out: Path) -> bool:
    """Whether every shard of the run in ``out`` has a prediction (or error) for each of its questions."""
    try:
        manifests = _manifests(Path(out))
    except EvalError:
        return False
    count = manifests[0]["shard"][1]
    if sorted(m["shard"][0] for m in manifests) != list(range(count)):
        return False
    done = read_all_predictions(Path(out))
    return all(qid in done for manifest in manifests for qid in manifest["qids"])


def _check_shards(out: Path, manifests: list[dict[str, Any]]) -> int:
    """The shard count of the run in ``out``; an EvalError when runs are mixed or a shard has not run."""
    benchmarks = {m["benchmark"] for m in manifests}
    counts = {m["shard"][1] for m in manifests}
    if len(benchmarks) != 1 or len(counts) != 1:
        raise EvalError(f"{out} mixes runs ({sorted(benchmarks)} with shard counts {sorted(counts)})")
    count = counts.pop()
    present = sorted(m["shard"][0] for m in manifests)
    if present != list(range(count)):
        missing = sorted(set(range(count)) - set(present))
        raise EvalError(f"{out}: shard(s) {', '.join(f'{i}/{count}' for i in missing)} have not run (no manifest)")
    return count


def score_run(out: str | Path, judge=None, rescore: bool = False) -> dict[str, Any]:
    """Join the shards of the run in ``out``, score it and write ``scores.json`` (and, for a sharded run, the
    merged ``predictions.jsonl``).  Questions without an answer are reported, never scored; every question of
    the benchmark file is accounted for in ``counts`` (see report.py), and ``status`` says whether the score is
    complete.  A run written by an older version, or any run with ``rescore``, is re-read from its benchmark
    data first (rescore.py)."""
    out = Path(out)
    manifests = _manifests(out)
    count = _check_shards(out, manifests)
    benchmark = get_benchmark(manifests[0]["benchmark"])
    questions = run_questions(benchmark, manifests, rescore=rescore)
    order = questions.order
    found = read_all_predictions(out)
    records: dict[str, dict] = {}
    prompt_changed: list[str] = []
    for qid in order:
        record = found.get(qid)
        if record is not None and questions.samples is not None:  # re-read: the current gold and meta
            sample = questions.samples[qid]
            if record.get("prompt") != sample.prompt:
                prompt_changed.append(qid)
            record = {**record, "gold": sample.gold, "meta": sample.meta}
        if record is not None:
            records[qid] = record
    asked = set(order)
    elsewhere = [qid for qid in found if qid not in asked]
    if count > 1:
        with open(out / ".predictions.jsonl.tmp", "w", encoding="utf-8") as handle:
            for qid in order:
                if qid in records:
                    handle.write(json.dumps(records[qid], ensure_ascii=False, default=str) + "\n")
        os.replace(out / ".predictions.jsonl.tmp", out / "predictions.jsonl")

    answered = [records[q] for q in order if q in records and "prediction" in records[q]]
    errors = [records[q] for q in order if q in records and "prediction" not in records[q]]
    missing = [q for q in order if q not in records]
    labeled = [r for r in answered if r.get("gold") is not None]
    invalid = questions.invalid

    result = benchmark.score(labeled, judge=judge) if labeled else {"metrics": {}}
    unparsed = result.pop("unparsed", 0)
    needs_judge = len(labeled) if result.get("judge_required") else 0
    counts = tally(
        in_file=questions.in_file,
        scored=len(labeled) - needs_judge,
        unparsed=unparsed,
        unreadable=len(invalid),
        left_out_by_limit=questions.left_out_by_limit,
        generation_errors=len(errors),
        missing_predictions=len(missing),
        without_reference=len(answered) - len(labeled),
        needs_judge=needs_judge,
    )
    state, reasons = status(counts)
    scores = {
        "benchmark": benchmark.name,
        "status": state,
        "not_scored_because": reasons,
        "model": manifests[0].get("model"),
        "engine": manifests[0].get("engine", "transformers"),
        "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": manifests[0].get("data"),
        "limit": manifests[0].get("limit"),
        "metrics": result.pop("metrics"),
        "counts": counts,
        **result,
        "problems": {
            "unreadable_rows": invalid[:PROBLEMS_LISTED],
            "generation_errors": [{"qid": r["qid"], "error": r.get("error")} for r in errors[:PROBLEMS_LISTED]],
            "missing_predictions": missing[:PROBLEMS_LISTED],
            "asked_with_another_prompt": prompt_changed[:PROBLEMS_LISTED],
            "answers_to_questions_not_in_the_run": elsewhere[:PROBLEMS_LISTED],
        },
    }
    if questions.note:
        scores["note"] = questions.note
    if judge is not None:
        scores["judge"] = {"base_url": judge.config.base_url, "model": judge.config.model}
    _write_json(out / "scores.json", scores)
    return scores
