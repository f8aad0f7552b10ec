"""Yes/no benchmarks: POPE (object hallucination) and MME (perception + cognition).

POPE, as its script (and LLaVA's ``eval_pope.py``) reads an answer: keep the first sentence, drop commas,
split on spaces; the answer is "no" when a word is ``No``, ``no`` or ``not``, otherwise "yes".  Metrics
per category (adversarial / popular / random): accuracy, precision, recall, F1 and the ratio of "yes".

MME, as its official ``calculation.py`` reads an answer: lower-cased; exactly "yes"/"no", else "yes" or
"no" within its first four characters, else "other" (wrong).  Per subtask: accuracy over questions and
accuracy+ over images (both of an image's two questions right); the subtask score is
100 * (acc + acc+), summed into the perception (10 subtasks, max 2000) and cognition (4, max 800) totals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minigemini.evaluation.base import LoadOptions, llava_questions, ratio
from minigemini.evaluation.prompts import SHORT_ANSWER, mme_prompt, with_suffix
from minigemini.evaluation.readers import first_present, image_source, iter_rows
from minigemini.evaluation.samples import InvalidRow, Sample

__all__ = [
    "MME_COGNITION",
    "MME_PERCEPTION",
    "load_mme",
    "load_pope",
    "mme_yes_no",
    "pope_yes_no",
    "score_mme",
    "score_pope",
]

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def _yes_no(value: Any) -> str | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower()
    return None


# ------------------------------------------------------------------------------------------------ POPE


def pope_yes_no(answer: str) -> str:
    """POPE's reading of an answer: "no" if the first sentence has the word No/no/not, else "yes"."""
    text = answer
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _pope_says_yes(answer: str) -> bool:
    text = answer.split(".")[0] if "." in answer else answer
    return any(word in ("Yes", "yes", "YES") for word in text.replace(",", "").split(" "))


def load_pope(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """LLaVA's ``llava_pope_test.jsonl`` (labels inline or from the ``coco_pope_<category>.json`` folder given
    as annotations) or the parquet/``datasets`` layout (``question``, ``answer``, ``category``, ``image``)."""
    for where, row, qid, text, image in llava_questions(options):
        if isinstance(row, InvalidRow):
            yield row
            continue
        category = row.get("category")
        raw = first_present(row, "label", "answer")
        if raw is None and options.annotations is not None:
            hit = options.annotations.lookup(qid, category=None if category is None else str(category))
            raw = None if hit is None else first_present(hit, "label", "answer")
        gold = None
        if raw is not None:
            gold = _yes_no(raw)
            if gold is None:
                yield InvalidRow(where, f"unknown answer format: POPE labels are yes/no, got {str(raw)[:40]!r}")
                continue
        source = image_source(image, options.image_dirs)
        yield Sample(
            qid,
            with_suffix(text, SHORT_ANSWER),
            [] if source is None else [source],
            gold,
            {"category": None if category is None else str(category)},
        )


def _binary_metrics(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    tn = sum(p == "no" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    f1 = None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "accuracy": ratio(tp + tn, len(pairs)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": ratio(tp + fp, len(pairs)),
        "counts": {"TP": tp, "FP": fp, "TN": tn, "FN": fn},
    }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present and len(present) == len(values) else None


def score_pope(records: list[dict], judge=None) -> dict[str, Any]:
    """Per-category POPE metrics, their mean (the figure papers report) and the pooled counts.

    ``unparsed`` counts answers with neither yes nor no/not in the first sentence: the POPE rule reads
    them as "yes", and so they are scored here, but they are reported.
    """
    by_category: dict[str, list[tuple[str, str]]] = defaultdict(list)
    pairs, unparsed = [], 0
    for record in records:
        answer = record["prediction"]
        pred = pope_yes_no(answer)
        if pred == "yes" and not _pope_says_yes(answer):
            unparsed += 1
        pair = (pred, record["gold"])
        pairs.append(pair)
        by_category[str(record.get("meta", {}).get("category") or "all")].append(pair)
    categories = {name: _binary_metrics(p) for name, p in sorted(by_category.items())}
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    metrics = {key: _mean([m[key] for m in categories.values()]) for key in keys} if categories else dict.fromkeys(keys)
    return {"metrics": metrics, "by_category": categories, "pooled": _binary_metrics(pairs), "unparsed": unparsed}


# ------------------------------------------------------------------------------------------------ MME


def mme_yes_no(answer: str) -> str:
    """MME's reading of an answer: "yes", "no" or "other"."""
    text = answer.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def _mme_group(subtask: str) -> str:
    if subtask in MME_PERCEPTION:
        return "perception"
    if subtask in MME_COGNITION:
        return "cognition"
    return "unknown"


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in _IMAGE_SUFFIXES:
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    return None


def _mme_folder(root: Path) -> Iterator[Sample | InvalidRow]:
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        subtask = task_dir.name
        if (task_dir / "questions_answers_YN").is_dir():
            text_dir, image_dir = task_dir / "questions_answers_YN", task_dir / "images"
        else:
            text_dir = image_dir = task_dir
        for text_file in sorted(text_dir.glob("*.txt")):
            image = _find_image(image_dir, text_file.stem)
            image_name = image.name if image is not None else text_file.stem
            source = str(image) if image is not None else str(image_dir / (text_file.stem + ".jpg"))
            lines = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            for number, line in enumerate(lines):
                where = f"{subtask}/{text_file.name}:{number + 1}"
                parts = line.split("\t")
                if len(parts) < 2 or not parts[0].strip():
                    yield InvalidRow(where, "expected 'question<TAB>answer'")
                    continue
                gold = _yes_no(parts[1])
                if gold is None:
                    yield InvalidRow(
                        where, f"unknown answer format: MME answers are Yes/No, got {parts[1].strip()[:40]!r}"
                    )
                    continue
                yield Sample(
                    qid=f"{subtask}/{image_name}#{number}",
                    prompt=mme_prompt(parts[0].strip()),
                    images=[source],
                    gold=gold,
                    meta={"subtask": subtask, "image": image_name, "group": _mme_group(subtask)},
                )


def _mme_rows(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """The hub layout (``question_id`` = "subtask/image.png", ``question``, ``answer``, ``category``, ``image``)."""
    counters: dict[str, int] = defaultdict(int)
    for where, row in iter_rows(options.data, options.split):
        if isinstance(row, InvalidRow):
            yield row
            continue
        image_id = first_present(row, "question_id", "image_id")
        subtask = first_present(row, "category", "subtask")
        question = first_present(row, "question", "text")
        if image_id is None or subtask is None or question is None:
            yield InvalidRow(where, "row needs question_id, category and question")
            continue
        gold = _yes_no(first_present(row, "answer", "label"))
        if gold is None:
            yield InvalidRow(
                where, f"unknown answer format: MME answers are Yes/No, got {str(row.get('answer'))[:40]!r}"
            )
            continue
        image_name = str(image_id).split("/")[-1]
        number = counters[f"{subtask}/{image_name}"]
        counters[f"{subtask}/{image_name}"] += 1
        source = image_source(first_present(row, "image", "image_path"), options.image_dirs)
        yield Sample(
            qid=f"{subtask}/{image_name}#{number}",
            prompt=mme_prompt(str(question).replace(SHORT_ANSWER, "").strip()),
            images=[] if source is None else [source],
            gold=gold,
            meta={"subtask": str(subtask), "image": image_name, "group": _mme_group(str(subtask))},
        )


def load_mme(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """The release folder (one folder per subtask: images with ``.txt`` files of ``question<TAB>Yes|No``
    lines beside them, or ``images/`` + ``questions_answers_YN/``), or the parquet/``datasets`` layout."""
    data = options.data
    if (
        data.is_dir()
        and not any(data.glob("*.parquet"))
        and not (data / "dataset_info.json").exists()
        and not (data / "dataset_dict.json").exists()
        and not (data / "data").is_dir()
    ):
        yield from _mme_folder(data)
    else:
        yield from _mme_rows(options)


def score_mme(records: list[dict], judge=None) -> dict[str, Any]:
    """MME per-subtask acc / acc+ / score and the perception / cognition totals."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    unparsed = 0
    for record in records:
        by_task[record["meta"]["subtask"]].append(record)
    subtasks: dict[str, dict[str, Any]] = {}
    totals: dict[str, float] = defaultdict(float)
    incomplete_images = 0
    for subtask, items in sorted(by_task.items()):
        images: dict[str, list[bool]] = defaultdict(list)
        correct = 0
        for record in items:
            pred = mme_yes_no(record["prediction"])
            unparsed += pred == "other"
            hit = pred == record["gold"]
            correct += hit
            images[record["meta"]["image"]].append(hit)
        pairs = [hits for hits in images.values() if len(hits) == 2]
        incomplete_images += len(images) - len(pairs)
        acc = correct / len(items)
        acc_plus = ratio(sum(all(h) for h in pairs), len(pairs))
        score = 100 * (acc + (acc_plus or 0.0))
        group = _mme_group(subtask)
        subtasks[subtask] = {
            "group": group,
            "acc": acc,
            "acc_plus": acc_plus,
            "score": score,
            "questions": len(items),
            "images": len(pairs),
        }
        totals[group] += score
    present = {
        group: [t for t in names if t in subtasks]
        for group, names in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION))
    }
    metrics = {
        "perception": totals["perception"] if present["perception"] else None,
        "cognition": totals["cognition"] if present["cognition"] else None,
    }
    return {
        "metrics": metrics,
        "subtasks": subtasks,
        "subtasks_missing": {
            g: [t for t in names if t not in subtasks]
            for g, names in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION))
        },
        "images_without_two_answers": incomplete_images,
        "unparsed": unparsed,
    }
