"""MME (perception + cognition) as its ``eval_tool/calculation.py`` scores it, from the files LLaVA and MGM use.

Files: the release folder ``MME_Benchmark_release_version`` (one folder per subtask: images with ``.txt`` files of
``question<TAB>Yes|No`` lines beside them, or ``images/`` + ``questions_answers_YN/``); LLaVA's
``llava_mme.jsonl`` (``question_id`` = ``"<subtask>/<image>"``, shared by the two questions of an image) with
that folder given as the annotations; or the hub layout (parquet / ``datasets``: ``question_id``, ``question``,
``answer``, ``category``, ``image``).

Ids: a question is ``"<subtask>/<image>#<n>"``, n its place among the image's questions (0, 1).  Join for
``llava_mme.jsonl``, as LLaVA's ``convert_answer_to_mme.py``: (subtask, ``<image stem>.txt``, question), the
question being the prompt without "Answer the question using a single word or phrase.", with
" Please answer yes or no." appended when missing (two spaces when that is how the release file has it).

Reading an answer (``parse_pred_ans``): lower-cased; exactly "yes"/"no", else "yes" or "no" within its first four
characters, else "other" (wrong, counted as unparsed).  Per subtask: acc over questions, acc+ over images (both
questions right); score = 100 * (acc + acc+), summed into perception (10 subtasks, max 2000) and cognition (4,
max 800).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from minigemini.evaluation.benchmarks.pope import yes_no_label
from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.prompts import SHORT_ANSWER, mme_prompt
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import ratio

__all__ = ["BENCHMARKS", "MME_COGNITION", "MME_PERCEPTION", "load_mme", "mme_answers", "mme_yes_no", "score_mme"]

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
_YES_NO = "Please answer yes or no."


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


def _folder_lines(root: Path) -> Iterator[tuple[str, Row]]:
    """``(where, row)`` for each question line of the release folder: the line, its subtask and image."""
    for subtask, text_dir, image_dir in _task_folders(root):
        for text_file in sorted(text_dir.glob("*.txt")):
            image = _find_image(image_dir, text_file.stem)
            image_name = image.name if image is not None else text_file.stem
            source = str(image) if image is not None else str(image_dir / (text_file.stem + ".jpg"))
            lines = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            for number, line in enumerate(lines):
                row = {"line": line, "number": number, "subtask": subtask, "image": image_name, "source": source}
                yield f"{subtask}/{text_file.name}:{number + 1}", row


def _folder_sample(where: str, row: Row) -> Sample:
    """A line ``question<TAB>Yes|No`` of the release folder."""
    parts = row["line"].strip().split("\t")
    if len(parts) < 2 or not parts[0].strip():
        raise Unreadable("expected 'question<TAB>answer'")
    subtask, image_name = row["subtask"], row["image"]
    return Sample(
        qid=f"{subtask}/{image_name}#{row['number']}",
        prompt=mme_prompt(parts[0].strip()),
        images=[row["source"]],
        gold=_yes_no(parts[1].strip()),
        meta={"subtask": subtask, "image": image_name, "group": _mme_group(subtask)},
    )


def _yes_no(raw: Any) -> str:
    gold = yes_no_label(raw)
    if gold is None:
        raise Unreadable(f"unknown answer format: MME answers are Yes/No, got {str(raw)[:40]!r}")
    return gold


def _task_folders(root: Path) -> Iterator[tuple[str, Path, Path]]:
    """(subtask, folder of the .txt files, folder of the images) of each subtask of the release folder."""
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if (task_dir / "questions_answers_YN").is_dir():
            yield task_dir.name, task_dir / "questions_answers_YN", task_dir / "images"
        else:
            yield task_dir.name, task_dir, task_dir


def mme_answers(root: Path) -> dict[tuple[str, str, str], str]:
    """(subtask, .txt file name, question) -> answer over the release folder, as convert_answer_to_mme.py's
    ``get_gt`` builds it (each line stripped, then split at the tab)."""
    answers = {}
    for subtask, text_dir, _ in _task_folders(root):
        for text_file in sorted(text_dir.glob("*.txt")):
            for line in text_file.read_text(encoding="utf-8").splitlines():
                parts = line.strip().split("\t")
                if len(parts) == 2:
                    answers[(subtask, text_file.name, parts[0])] = parts[1]
    return answers


def _answer_in_folder(answers: dict, subtask: str, image_id: str, question: str) -> str | None:
    """The release folder's answer of a question of llava_mme.jsonl (convert_answer_to_mme.py's join)."""
    text_file = Path(image_id.split("/")[-1]).stem + ".txt"
    prompt = question.replace(SHORT_ANSWER, "").strip()
    tries = [prompt] if _YES_NO in prompt else [f"{prompt} {_YES_NO}", f"{prompt}  {_YES_NO}"]
    for attempt in tries:
        if (subtask, text_file, attempt) in answers:
            return answers[(subtask, text_file, attempt)]
    return None


def _row_sample(options: LoadOptions, answers: dict | None, counters: Counter, where: str, row: Row) -> Sample:
    """A row with ``question_id`` = "subtask/image" (LLaVA's ``llava_mme.jsonl``: ``text``, answers from the release
    folder given as annotations; the hub layout: ``question``, ``answer``, ``category``, ``image``)."""
    image_id = first_present(row, "question_id", "image_id")
    question = first_present(row, "question", "text")
    subtask = first_present(row, "category", "subtask")
    if subtask is None and image_id is not None and "/" in str(image_id):
        subtask = str(image_id).split("/")[0]  # as convert_answer_to_mme.py reads it
    if image_id is None or subtask is None or question is None:
        raise Unreadable("row needs question_id (subtask/image), a question and a subtask")
    subtask, question = str(subtask), str(question)
    image_name = str(image_id).split("/")[-1]
    number = counters[f"{subtask}/{image_name}"]  # counted before any check: a question keeps its number
    counters[f"{subtask}/{image_name}"] += 1
    raw = first_present(row, "answer", "label")
    if raw is None and answers is None:
        raise Unreadable("no answer in the row: give the MME release folder as the annotations")
    if raw is None:
        raw = _answer_in_folder(answers, subtask, str(image_id), question)
        if raw is None:
            raise Unreadable(f"question {question!r} of {image_id} is not in the MME folder {options.annotations.path}")
    return Sample(
        qid=f"{subtask}/{image_name}#{number}",
        prompt=mme_prompt(question.replace(SHORT_ANSWER, "").strip()),
        images=options.images(first_present(row, "image", "image_path")),
        gold=_yes_no(raw),
        meta={"subtask": subtask, "image": image_name, "group": _mme_group(subtask)},
    )


def _is_release_folder(data: Path) -> bool:
    return (
        data.is_dir()
        and not any(data.glob("*.parquet"))
        and not (data / "dataset_info.json").exists()
        and not (data / "dataset_dict.json").exists()
        and not (data / "data").is_dir()
    )


def load_mme(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """The release folder, LLaVA's question JSONL (+ the folder as annotations) or the hub layout (module
    docstring)."""
    if _is_release_folder(options.data):
        return load_rows(options, _folder_sample, rows=_folder_lines(options.data))
    folder = options.annotations.path if options.annotations is not None else None
    answers = mme_answers(folder) if folder is not None and folder.is_dir() else None
    return load_rows(options, partial(_row_sample, options, answers, Counter()))


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


BENCHMARKS = (
    Benchmark(
        "mme",
        "MME: release folder, llava_mme.jsonl (+ the folder) or parquet; perception and cognition scores",
        load_mme,
        score_mme,
    ),
)
