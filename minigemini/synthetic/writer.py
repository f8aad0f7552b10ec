"""`mgm data synth`: a synthetic world written as a training folder (images + LLaVA-format JSON), optionally with
a held-out test set."""

from __future__ import annotations

import random
from pathlib import Path

from minigemini.saving import write_json_atomic
from minigemini.synthetic.benchmark import write_test_set
from minigemini.synthetic.fonts import dejavu_font
from minigemini.synthetic.world import (
    QUESTION_TYPES,
    WorldOptions,
    make_picture_request,
    make_scene,
    scene_dialogue,
    scene_drill,
    scene_seeds,
)

__all__ = ["write_world"]


def write_world(
    output: str | Path,
    scenes: int = 1000,
    generation: int = 200,
    test_per_type: int = 0,
    test_generation: int = 0,
    seed: int = 0,
    options: WorldOptions | None = None,
    max_questions: int = 5,
    drills: tuple[str, ...] | list[str] = (),
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, int | str]:
    """Write a world to ``output``: ``images/``, ``captions.json`` (stage 1 and encoder pre-training; each record
    also lists its scene's ``regions``: ``{"box": [left, top, right, bottom] in fractions, "words": [...]}``, and
    ``"text"``: the string drawn in the box, where one is),
    ``instructions.json`` (stage 2: dialogues + text-only picture requests), and when asked a held-out test set:
    ``test/questions.jsonl`` (LLaVA question format, ``category`` = question type, images in ``test/images``) and
    ``test/generation.jsonl`` (requests with their wanted scene).  Returns counts of what was written.

    ``drills`` (question types, e.g. ``("count", "position")``) also writes ``drills.json``: for every scene with
    questions of those types, one short dialogue asking all of them -- extra stage-2 answers of the types a model
    learns slowest, without the long description every dialogue carries (research/README.md measures them).
    ``instructions.json`` is the same with or without them."""
    options = options or WorldOptions()
    drills = tuple(drills)
    _check_settings(options, (scenes, generation, test_per_type, test_generation), max_questions, drills)
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty; choose a new folder or pass --overwrite")
    (output / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    captions, instructions, drill_records = [], [], []
    for index, scene_seed in enumerate(scene_seeds(seed, scenes)):
        scene = make_scene(scene_seed, options)
        name = f"images/{index:06d}.png"
        scene.image.save(output / name)
        caption, dialogue, drill = _scene_records(scene, index, name, rng, max_questions, drills)
        captions.append(caption)
        instructions.append(dialogue)
        if drill:
            drill_records.append(drill)
        if progress and (index + 1) % 1000 == 0:
            print(f"  {index + 1}/{scenes} scenes", flush=True)
    for index, request_seed in enumerate(scene_seeds(seed + 1, generation)):
        request = make_picture_request(request_seed)
        instructions.append(
            {"id": f"generation-{index:06d}", "source": "synthetic-generation", "conversations": request.conversation()}
        )
    rng.shuffle(instructions)
    write_json_atomic(output / "captions.json", captions)
    write_json_atomic(output / "instructions.json", instructions)
    counts: dict[str, int | str] = {"scenes": scenes, "dialogues": scenes, "generation": generation}
    if drills:
        write_json_atomic(output / "drills.json", drill_records)
        counts["drills"] = len(drill_records)
    if test_per_type or test_generation:
        counts.update(write_test_set(output / "test", test_per_type, test_generation, seed + 2, options))
    write_json_atomic(
        output / "world.json", {"seed": seed, "options": options.__dict__, "drills": list(drills), "counts": counts}
    )
    return counts


def _check_settings(options: WorldOptions, counts: tuple[int, ...], max_questions: int, drills: tuple[str, ...]):
    """Refuse bad settings, and missing fonts, before anything is written."""
    options.validate()
    if any(count < 0 for count in counts):
        raise ValueError("scene, generation and test counts must be >= 0")
    if max_questions < 1:
        raise ValueError(f"max_questions must be >= 1, got {max_questions}")
    unknown = sorted(set(drills) - set(QUESTION_TYPES))
    if unknown:
        raise ValueError(f"drill question types must be among {QUESTION_TYPES}, got unknown {unknown}")
    dejavu_font(options.text_size[0])


def _scene_records(scene, index: int, name: str, rng: random.Random, max_questions: int, drills: tuple[str, ...]):
    """A scene's caption record (with its regions), its dialogue record, and its drill record (None: no question of
    the ``drills`` types)."""

    def record(kind: str, conversations: list[dict]) -> dict:
        return {
            "id": f"{kind}-{index:06d}",
            "image": name,
            "source": f"synthetic-{scene.kind}",
            "conversations": conversations,
        }

    describe = [
        {"from": "human", "value": "<image>\nDescribe the image briefly."},
        {"from": "gpt", "value": scene.caption},
    ]
    caption = record("caption", describe) | {"regions": [r.record() for r in scene.regions]}
    dialogue = record("dialogue", scene_dialogue(scene, rng, max_questions))
    drill = scene_drill(scene, drills)
    return caption, dialogue, record("drill", drill) if drill else None
