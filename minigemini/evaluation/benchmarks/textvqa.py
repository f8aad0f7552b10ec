"""TextVQA as LLaVA and Mini-Gemini evaluate it: ``llava_textvqa_val_v051_ocr.jsonl`` + ``TextVQA_0.5.1_val.json``.

In that question file ``question_id`` is the *image* id, so every question on an image carries the same id;
``eval_textvqa.py`` joins a prediction to its answers on ``(image_id, question.lower())``, the question being
read back out of the prompt.  Here each row is one question: the first on an image keeps the image id as its
``qid`` (runs written before this rule keep their answers), the k-th (k >= 2) gets ``"<image id>#k"``.
References are parsed and scored as VQAv2's (``vqa.py``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from functools import partial

from minigemini.evaluation.benchmarks.vqa import parse_references, score_vqa
from minigemini.evaluation.loader import Benchmark, LoadOptions, llava_fields, load_rows
from minigemini.evaluation.prompts import SHORT_ANSWER, with_suffix
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable

__all__ = ["BENCHMARKS", "load_textvqa", "textvqa_question"]

_OCR_LINE = "Reference OCR token:"
_OCR_PROMPT = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def textvqa_question(text: str) -> str:
    """The bare question of a TextVQA prompt, as ``eval_textvqa.py``'s ``prompt_processor`` reads it (lower-cased
    by the caller): the ``OCR tokens: ... Question: q Short answer:`` layout, or the line that is neither the
    ``Reference OCR token:`` line nor the answer instruction.  Where that script stops on a layout it does not
    know (an assertion), the first such line is taken."""
    if text.startswith("OCR tokens: "):
        match = _OCR_PROMPT.search(text)
        if match:
            return match.group(1).strip()
    for line in text.split("\n"):
        line = line.strip()
        if line and not line.startswith(_OCR_LINE) and line != SHORT_ANSWER:
            return line
    return text.strip()


def _textvqa_sample(options: LoadOptions, asked: Counter, where: str, row: Row) -> Sample:
    image_id, text, image = llava_fields(row)
    asked[image_id] += 1
    qid = image_id if asked[image_id] == 1 else f"{image_id}#{asked[image_id]}"
    question = textvqa_question(text)
    raw = first_present(row, "answers", "answer", "gt_answers")
    if raw is None and options.annotations is not None:
        hit = options.annotations.by_pair.get((image_id, question.lower()))
        if hit is None:
            raise Unreadable(
                f"no answers for image {image_id} and question {question!r} in {options.annotations.path.name} "
                "(joined on image_id + lower-cased question, as eval_textvqa.py)"
            )
        raw = first_present(hit, "answers", "answer")
    meta = {"image_id": image_id, "question": question}
    if row.get("category") is not None:
        meta["category"] = row["category"]
    return Sample(qid, with_suffix(text, SHORT_ANSWER), options.images(image), parse_references(raw), meta)


def load_textvqa(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One Sample per row (see the module docstring for ids); answers inline (``answers``) or from the
    annotation file, joined on (image id, lower-cased question).  A question the annotation file does not have
    is an InvalidRow (the official script stops with a KeyError there)."""
    return load_rows(options, partial(_textvqa_sample, options, Counter()))


BENCHMARKS = (
    Benchmark(
        "textvqa", "TextVQA val: LLaVA question JSONL (+ TextVQA_0.5.1_val.json); VQA accuracy", load_textvqa, score_vqa
    ),
)
