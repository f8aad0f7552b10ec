"""TextVQA as LLaVA and Mini-Gemini evaluate it: ``llava_textvqa_val_v051_ocr.jsonl`` + ``TextVQA_0.5.1_val.json``.

In that question file ``question_id`` is the *image* id, so every question on an image carries the same id;
``eval_textvqa.py`` joins a prediction to its answers on ``(image_id, question.lower())``, the question being
read back out of the prompt.  Here each row is one question: the first on an image keeps the image id as its
``qid`` (runs written before this rule keep their answers), the k-th (k >= 2) gets ``"<image id>#k"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from minigemini.evaluation.base import LoadOptions, llava_questions
from minigemini.evaluation.prompts import SHORT_ANSWER, with_suffix
from minigemini.evaluation.readers import first_present, image_source
from minigemini.evaluation.samples import InvalidRow, Sample
from minigemini.evaluation.vqa import reference_answers

__all__ = ["load_textvqa", "textvqa_question"]

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


def load_textvqa(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One Sample per row (see the module docstring for ids); answers inline (``answers``) or from the
    annotation file, joined on (image id, lower-cased question).  A question the annotation file does not have
    is an InvalidRow (the official script stops with a KeyError there)."""
    asked: dict[str, int] = {}
    for where, row, image_id, text, image in llava_questions(options):
        if isinstance(row, InvalidRow):
            yield row
            continue
        asked[image_id] = asked.get(image_id, 0) + 1
        qid = image_id if asked[image_id] == 1 else f"{image_id}#{asked[image_id]}"
        question = textvqa_question(text)
        raw = first_present(row, "answers", "answer", "gt_answers")
        if raw is None and options.annotations is not None:
            hit = options.annotations.by_pair.get((image_id, question.lower()))
            if hit is None:
                yield InvalidRow(
                    where,
                    f"no answers for image {image_id} and question {question!r} in {options.annotations.path.name} "
                    "(joined on image_id + lower-cased question, as eval_textvqa.py)",
                )
                continue
            raw = first_present(hit, "answers", "answer")
        gold = None
        if raw is not None:
            gold = reference_answers(raw)
            if gold is None:
                yield InvalidRow(where, f"unknown answer format {type(raw).__name__}: {str(raw)[:60]!r}")
                continue
        source = image_source(image, options.image_dirs)
        meta = {"image_id": image_id, "question": question}
        if row.get("category") is not None:
            meta["category"] = row["category"]
        yield Sample(qid, with_suffix(text, SHORT_ANSWER), [] if source is None else [source], gold, meta)
