"""DocVQA (single-page document VQA), scored with ANLS as the challenge defines it.

Files: the challenge's ``val_v1.0.json`` / ``test_v1.0.json`` (``{"data": [{questionId, question, image:
"documents/<doc>.png", docId, answers: [...], question_types}]}``; the images under the folder of the file or
``--image-dir``), lmms-lab's ``DocVQA`` parquet (the same fields, ``image`` as bytes) or VLMEvalKit's
``DocVQA_VAL.tsv`` (``index``, ``question``, ``answer`` a list literal, base64 ``image``).  The question id
(``questionId``) is unique.  The test split has no answers: its answers are written, not scored.

Prompt: ``question\\nAnswer the question using a single word or phrase.`` (LLaVA's short-answer instruction, as
lmms-eval's ``docvqa`` asks).

ANLS (Biten et al., ICCV 2019; the DocVQA RRC's evaluation): answer and each reference stripped and lower-cased;
NL = Levenshtein distance / the longer length; a question scores max over its references of 1 - NL where NL < 0.5,
else 0; ANLS is the mean over the questions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.option_questions import table_image
from minigemini.evaluation.prompts import SHORT_ANSWER, with_suffix
from minigemini.evaluation.readers import Row, answer_list, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = ["ANLS_THRESHOLD", "BENCHMARKS", "anls", "levenshtein", "load_docvqa", "score_docvqa"]

ANLS_THRESHOLD = 0.5


def levenshtein(a: str, b: str) -> int:
    """The edit distance (insertions, deletions, substitutions, each 1) between ``a`` and ``b``."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def anls(prediction: str, references: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """The question's ANLS: max over the references of 1 - NL(prediction, reference), 0 where NL >= threshold."""
    answer = str(prediction).strip().lower()
    best = 0.0
    for reference in references:
        gold = str(reference).strip().lower()
        length = max(len(answer), len(gold))
        distance = levenshtein(answer, gold) / length if length else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def _docvqa_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    qid = first_present(row, "questionId", "question_id", "index")
    question = first_present(row, "question")
    if qid is None or question is None:
        raise Unreadable("no field 'questionId' or 'question'")
    raw = first_present(row, "answers", "answer")
    if isinstance(raw, str) and not raw.strip().startswith("["):
        raise Unreadable("field 'answers' is not a list of strings")
    gold = answer_list(raw)
    meta = {
        "question_types": answer_list(first_present(row, "question_types")) or [],
        "doc_id": first_present(row, "docId"),
    }
    images = table_image(options, row.get("image"))
    return Sample(str(qid), with_suffix(str(question), SHORT_ANSWER), images, gold, meta)


def load_docvqa(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One question per entry of the challenge's JSON (or row of the parquet)."""
    return load_rows(options, partial(_docvqa_sample, options))


def score_docvqa(records: list[dict], judge=None) -> dict[str, Any]:
    """ANLS over the questions, and per question type."""
    scores: list[float] = []
    by_type: dict[str, list[float]] = defaultdict(list)
    for record in records:
        score = anls(record["prediction"], record["gold"])
        scores.append(score)
        for kind in record["meta"].get("question_types") or []:
            by_type[str(kind)].append(score)
    return {"metrics": {"anls": ratio(sum(scores), len(scores))}, "by_question_type": means(by_type)}


BENCHMARKS = (Benchmark("docvqa", "DocVQA: the challenge's JSON or lmms-lab parquet; ANLS", load_docvqa, score_docvqa),)
