"""The synthetic world's held-out benchmark: short-answer questions on fresh scenes, and picture requests.

Questions rotate over the world's eight types (``QUESTION_TYPES``: colour, shape, count, position, and the four
small-print types word, number, chart, document), each asked about a scene of its own drawn from ``seed``; they are
written in LLaVA's question-JSONL format (``question_id, image, text, answer, category``) with the images beside
them and scored with VQA accuracy (one reference: normalised exact match, so "Two." matches "2").  Use a seed that
the training world did not use.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from minigemini.saving import write_text_atomic
from minigemini.synthetic.world import QUESTION_TYPES, WorldOptions, make_picture_request, make_scene, scene_seeds

__all__ = ["SCENE_FOR_TYPE", "write_picture_requests", "write_synthetic_benchmark", "write_test_set"]

#: The scene kind that asks each question type.
SCENE_FOR_TYPE = {
    "colour": "shapes",
    "shape": "shapes",
    "count": "shapes",
    "position": "shapes",
    "word": "text",
    "number": "text",
    "chart": "chart",
    "document": "document",
}


def write_synthetic_benchmark(directory: str | Path, n: int = 40, seed: int = 0, options=None) -> Path:
    """Write ``n`` questions (types in rotation) to ``directory/questions.jsonl`` and ``directory/images/``; the same
    ``seed`` gives the same files.  Returns the JSONL path."""
    options = options or WorldOptions()
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    options.validate()
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    seeds = scene_seeds(seed, None)
    pick = random.Random(seed)
    rows = []
    for index in range(n):
        qtype = QUESTION_TYPES[index % len(QUESTION_TYPES)]
        while True:  # a scene may lack the type (a text scene with a number but no word)
            scene = make_scene(next(seeds), options, kind=SCENE_FOR_TYPE[qtype])
            candidates = [q for q in scene.questions if q.type == qtype]
            if candidates:
                break
        question = pick.choice(candidates)
        name = f"images/{index:05d}.png"
        scene.image.save(directory / name)
        rows.append(
            {
                "question_id": f"synthetic-{index:05d}",
                "image": name,
                "text": question.text,
                "answer": question.answer,
                "category": qtype,
            }
        )
    path = directory / "questions.jsonl"
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_picture_requests(path: str | Path, n: int, seed: int = 0) -> Path:
    """``n`` held-out picture requests (``text``, and the canonical ``description`` the answer should draw)."""
    requests = [make_picture_request(s) for s in scene_seeds(seed, n)]
    lines = [
        json.dumps({"question_id": f"generation-{i:05d}", "text": r.request, "description": r.description})
        for i, r in enumerate(requests)
    ]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def write_test_set(
    folder: str | Path, per_type: int, generation: int, seed: int, options=None, reuse: bool = False
) -> dict[str, int]:
    """A held-out test set in ``folder``: ``per_type`` questions of every type, each on its own fresh scene
    (``questions.jsonl``), and ``generation`` picture requests (``generation.jsonl``).  ``reuse``: keep the files
    already there (the same seed writes the same files).  Returns the counts."""
    folder = Path(folder)
    counts = {"test_questions": per_type * len(QUESTION_TYPES), "test_generation": generation}
    wanted = [name for name, n in (("questions.jsonl", per_type), ("generation.jsonl", generation)) if n]
    if reuse and all((folder / name).is_file() for name in wanted):
        return counts
    if per_type:
        write_synthetic_benchmark(folder, n=counts["test_questions"], seed=seed, options=options)
    if generation:
        write_picture_requests(folder / "generation.jsonl", generation, seed=seed + 1)
    return counts
