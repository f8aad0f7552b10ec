"""MM-Vet: open answers graded 0.0-1.0 by an LLM judge with the benchmark's few-shot prompt.

As MM-Vet's grader: the prompt is followed by ``question | ground truth | prediction | `` (``<AND>``/``<OR>``
padded with spaces), the reply's first word must be a number in [0, 1]; otherwise the judge is asked again
with "Predict the correctness of the answer (digit): " appended and the temperature raised by 0.5, up to
five tries, after which the answer gets 0.0 (counted as ``judge_failures``).  Scores are averaged ×100,
in total and per capability (a question counts for each of its capabilities).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.readers import Row, first_present, iter_rows
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = ["BENCHMARKS", "GRADER_PROMPT", "grade", "grading_prompt", "load_mmvet", "score_mmvet"]

GRADER_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""
_RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
_MAX_TRIES = 5


def grading_prompt(question: str, answer: str, prediction: str) -> str:
    answer = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return f"{GRADER_PROMPT}\n{question} | {answer} | {prediction} | "


def _score_of(reply: str) -> float | None:
    try:
        score = float(reply.split(" ")[0].strip())
    except ValueError:
        return None
    return score if 0.0 <= score <= 1.0 else None


def grade(judge, question: str, answer: str, prediction: str) -> tuple[float, bool]:
    """(score, graded): ``graded`` is False when the judge never gave a usable number (score 0.0 then)."""
    prompt = grading_prompt(question, answer, prediction)
    score = _score_of(judge.complete(prompt, max_tokens=3, temperature=0.0))
    temperature = 0.0
    tries = 1
    while score is None and tries < _MAX_TRIES:
        temperature += 0.5
        tries += 1
        score = _score_of(judge.complete(prompt + _RETRY_SUFFIX, max_tokens=3, temperature=temperature))
    return (0.0, False) if score is None else (score, True)


def _mmvet_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    qid = first_present(row, "_key", "question_id", "id")
    question = first_present(row, "question", "text")
    if qid is None or question is None:
        raise Unreadable("row has no id or no question")
    qid = str(qid)
    answer = first_present(row, "answer")
    hit = {}
    if answer is None and options.annotations is not None:
        qid = qid if qid.startswith("v1_") else f"v1_{qid}"  # convert_mmvet_for_eval.py's key
        hit = options.annotations.lookup(qid)
        if hit is None:
            raise Unreadable(f"{qid} is not in {options.annotations.path.name}")
        answer = first_present(hit, "answer")
    capability = row.get("capability") or hit.get("capability") or []
    if isinstance(capability, str):
        capability = [c.strip() for c in capability.split(",") if c.strip()]
    if answer is not None and not isinstance(answer, str):
        raise Unreadable(f"unknown answer format {type(answer).__name__}")
    images = options.images(first_present(row, "image", "imagename"))
    meta = {"capability": sorted(set(map(str, capability))), "question": str(question)}
    return Sample(qid, str(question), images, answer, meta)


def load_mmvet(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """``mm-vet.json`` (``{"v1_0": {imagename, capability, question, answer}}``, images in ``images/``), the
    folder holding it, parquet / ``datasets`` rows (``question_id, question, answer, capability, image``), or
    LLaVA's ``llava-mm-vet.jsonl`` (``question_id`` n, ``image``, ``text``) with ``mm-vet.json`` as the
    annotations, joined as ``convert_mmvet_for_eval.py`` keys answers: ``v1_<n>``."""
    data = options.data
    if data.is_dir() and (data / "mm-vet.json").is_file():
        data = data / "mm-vet.json"
    return load_rows(options, partial(_mmvet_sample, options), rows=iter_rows(data, options.split))


def score_mmvet(records: list[dict], judge=None) -> dict[str, Any]:
    """Mean judge score ×100, total and per capability; without a judge nothing is scored."""
    if judge is None:
        return {
            "metrics": {"score": None},
            "judge_required": True,
            "note": "MM-Vet is graded by an LLM: pass --judge-url and --judge-model (or run `mgm eval merge` with them)",
        }
    scores: list[float] = []
    failures = 0
    capabilities: dict[str, list[float]] = defaultdict(list)
    for record in records:
        score, graded = grade(judge, record["meta"]["question"], record["gold"], record["prediction"])
        failures += not graded
        scores.append(score)
        for capability in record["meta"]["capability"]:
            capabilities[capability].append(score)
    total = ratio(sum(scores), len(scores))
    return {
        "metrics": {"score": None if total is None else 100 * total},
        "by_capability": means(capabilities, scale=100),
        "judge_failures": failures,
        "unparsed": failures,
    }


BENCHMARKS = (
    Benchmark(
        "mmvet",
        "MM-Vet: mm-vet.json + images; LLM-judge score",
        load_mmvet,
        score_mmvet,
        needs_judge=True,
        max_new_tokens=1024,
    ),
)
