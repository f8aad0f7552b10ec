"""The prompts of the paper's evaluation (LLaVA / Mini-Gemini eval scripts and the benchmarks' own configs).

The image placeholder is not part of these strings: ``generate_answers`` puts ``<image>\\n`` first, as the
release does.
"""

from __future__ import annotations

from collections.abc import Sequence

from minigemini.evaluation.choices import format_options
from minigemini.templates import SHORT_ANSWER

__all__ = [
    "OPTION_LETTER",
    "SHORT_ANSWER",
    "mathvista_query",
    "mmbench_prompt",
    "mme_prompt",
    "mmmu_prompt",
    "with_suffix",
]

#: LLaVA/MGM instruction for multiple choice (MMBench, ScienceQA, SEED, MMMU).
OPTION_LETTER = "Answer with the option's letter from the given choices directly."


def with_suffix(text: str, suffix: str | None) -> str:
    """``text`` + ``"\\n" + suffix`` unless the text already ends with it (LLaVA's JSONL files usually do)."""
    text = text.strip()
    if not suffix or text.endswith(suffix):
        return text
    return f"{text}\n{suffix}"


def mme_prompt(question: str) -> str:
    """MME question (it ends with "Please answer yes or no.") + the short-answer instruction, as LLaVA runs it."""
    return with_suffix(question, SHORT_ANSWER)


def mmbench_prompt(question: str, options: Sequence[str], hint: str | None = None) -> str:
    """LLaVA's MMBench prompt: ``[hint\\n]question\\nA. ..\\nB. ..\\nAnswer with the option's letter ...``."""
    text = question if not hint else f"{hint}\n{question}"
    return f"{text}\n{format_options(options)}\n{OPTION_LETTER}"


def mmmu_prompt(question: str, options: Sequence[str] | None) -> str:
    """MMMU's llava1.5 config (used by MGM): ``question\\n(A) ..\\n(B) ..\\n\\nAnswer with ...`` for multiple
    choice, ``question\\nAnswer the question using a single word or phrase.`` for open questions."""
    if options:
        return f"{question}\n{format_options(options, style='paren')}\n{OPTION_LETTER}"
    return f"{question}\n{SHORT_ANSWER}"


_MATHVISTA_HINTS = {
    "multi_choice": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.",
    "integer": "Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.",
    (
        "float",
        1,
    ): "Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.",
    (
        "float",
        2,
    ): "Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.",
    "list": "Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.",
}


def mathvista_query(
    question: str,
    question_type: str,
    answer_type: str,
    choices: Sequence[str] | None = None,
    unit: str | None = None,
    precision: int | None = None,
) -> str:
    """MathVista's zero-shot "solution" query (used when the data carries no ``query`` field):
    hint line, ``Question: ...`` with the unit, and ``Choices:`` with ``(A) ..`` lines."""
    if question_type == "multi_choice":
        hint = _MATHVISTA_HINTS["multi_choice"]
    elif answer_type == "float":
        hint = _MATHVISTA_HINTS.get(("float", int(precision or 1)), _MATHVISTA_HINTS[("float", 1)])
    else:
        hint = _MATHVISTA_HINTS.get(answer_type, _MATHVISTA_HINTS["integer"])
    question_text = f"Question: {question}" + (f" (Unit: {unit})" if unit else "")
    lines = [hint, question_text]
    if choices:
        lines.append("\n".join(["Choices:"] + [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices)]))
    return "\n".join(lines)
