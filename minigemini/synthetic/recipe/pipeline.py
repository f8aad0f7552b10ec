"""`mgm train --recipe synthetic`: the default model's whole recipe, step by step, each step resumable.

world -> encoders (CLIP-style) -> read (the HR tower names drawn strings; optional) -> init (SmolLM2 + towers) -> align
(visual tokens towards word embeddings) -> stage 1 -> chat (the LLM's own answers to plain prompts; optional) -> stage 2
on the dialogues and those answers -> drill (stage 2 going on in its adapter, the world's drills added; optional) (->
export). The recipe file (``recipe.yaml`` beside this module) holds the settings of every step; a step whose output
exists is skipped, and an interrupted training stage continues from its last checkpoint. Variants (``--variant``) share
the world and the encoders: ``mining`` (the default model), ``lr_only`` (the LLaVA-style baseline), ``hd`` (token
extension).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from minigemini.synthetic.default_model import VARIANTS, build_model, synthetic_config
from minigemini.synthetic.recipe.export import export_default_model
from minigemini.train.config import TrainConfig

__all__ = ["SYNTHETIC_RECIPE", "is_pipeline", "run_synthetic_recipe"]

SYNTHETIC_RECIPE = Path(__file__).resolve().with_name("recipe.yaml")  # package data, so an installed package has it
CHAT_PROMPTS = SYNTHETIC_RECIPE.with_name("chat_prompts.txt")  # the chat step's prompts unless its section names some
_SECTIONS = ("world", "encoders", "read", "align", "stage1", "chat", "stage2", "drill")
_KEYS = ("pipeline", "llm", *_SECTIONS)  # llm: a causal LM directory instead of SmolLM2 (tests use a tiny one)


def is_pipeline(recipe: dict[str, Any]) -> bool:
    return recipe.get("pipeline") == "synthetic"


def _done(message: str) -> None:
    print(f"[recipe] {message}", flush=True)


def run_synthetic_recipe(
    recipe: dict[str, Any], output: str | Path, variant: str = "mining", export: str | Path | None = None
) -> Path:
    """Run (or resume) every step into ``output``; returns the last stage's folder (exported too when ``export``)."""
    from minigemini.synthetic.smollm2 import smollm2_dir

    _check_recipe(recipe, variant)
    output = Path(output)
    started = time.perf_counter()
    world = _world(recipe, output / "world")
    stages = _stages(recipe, world)
    llm_dir = recipe.get("llm") or smollm2_dir()
    encoders = _encoders(recipe, output, llm_dir, world)
    init = _init(output / variant / "init", llm_dir, variant, encoders)
    previous = _align(recipe, init, world, output / variant / "aligned", variant)
    if "chat" in recipe:  # the LLM is untouched until stage 2, so init answers as SmolLM2 does, in the chat template
        answers = _chat(recipe, init, output / "chat" / "replay.json")
        for _, _, data in stages[1:]:
            data.append(str(answers))
    for stage, section, data in stages:
        previous = _train_stage(recipe, stage, section, data, previous, output / variant / section, variant)
    _done(f"{variant} trained in {output} ({(time.perf_counter() - started) / 60:.1f} min this run)")
    if export is not None:
        exported = export_default_model(previous, export)
        _done(f"exported to {exported}")
    return previous


def _check_recipe(recipe: dict[str, Any], variant: str) -> None:
    """Refuse an unknown variant or key, and drills no step uses, before any step runs."""
    if variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {VARIANTS}, got {variant!r}")
    unknown = sorted(set(recipe) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in the synthetic recipe; known: {', '.join(_KEYS)}")
    if recipe.get("world", {}).get("drills") and "drill" not in recipe:
        raise ValueError(
            "the recipe's world writes drills but no step uses them: add a `drill:` section (stage 2 going on with "
            "them; in stage 2 itself they cost every type, research/README.md) or leave `drills` out of `world:`"
        )


def _world(recipe: dict[str, Any], world: Path) -> Path:
    """The world step: the scenes, captions, dialogues (and drills) the other steps train on."""
    from minigemini.synthetic.writer import write_world

    if not (world / "world.json").is_file():
        _done(f"world -> {world}")
        write_world(world, overwrite=True, progress=True, **recipe.get("world", {}))
    return world


def _stages(recipe: dict[str, Any], world: Path) -> list[tuple[int, str, list[str]]]:
    """The training stages as (stage, the recipe's section, data files): stage 1 on the captions, stage 2 on the
    dialogues and, with a ``drill`` section, stage 2 going on with the drills added."""
    captions, instructions = str(world / "captions.json"), str(world / "instructions.json")
    stages = [(1, "stage1", [captions]), (2, "stage2", [instructions])]
    if "drill" in recipe:  # stage 2's dialogues again with the drills: as a continuation they lift position answers
        drills = world / "drills.json"
        if not drills.is_file():
            raise FileNotFoundError(
                f"the recipe's drill step needs the world's drills but {world} was written without them ({drills} is "
                f"missing): add `drills: [position]` (or other types) under `world:`, remove {world} and the world "
                "step writes it again, the same scenes and dialogues with the drills"
            )
        stages.append((2, "drill", [instructions, str(drills)]))
    return stages


def _encoders(recipe: dict[str, Any], output: Path, llm_dir: str, world: Path) -> Path:
    """The encoders step (both towers CLIP-style) and, with a ``read`` section, the read step (the HR tower names
    drawn strings): the towers' weights file, shared by the variants."""
    from transformers import AutoConfig

    from minigemini.synthetic.recipe.encoders import EncoderPretrainConfig, pretrain_encoders
    from minigemini.synthetic.recipe.reading import ReadingPretrainConfig, pretrain_reading

    captions = [str(world / "captions.json")]
    tower_config = synthetic_config(AutoConfig.from_pretrained(llm_dir).to_dict(), "mining")
    _done(f"encoders -> {output / 'encoders'}")
    config = EncoderPretrainConfig(**recipe.get("encoders", {}))
    encoders_file = pretrain_encoders(tower_config, captions, [], output / "encoders", config)
    if "read" in recipe:
        _done(f"read -> {output / 'reading'}")
        config = ReadingPretrainConfig(**recipe["read"])
        encoders_file = pretrain_reading(tower_config, encoders_file, captions, output / "reading", config)
    return encoders_file


def _init(init: Path, llm_dir: str, variant: str, encoders: Path) -> Path:
    """The init step: the variant's Mini-Gemini on the LLM with the trained towers."""
    from minigemini.saving import save_model_and_processor

    if not (init / "config.json").is_file():
        _done(f"init ({variant}) -> {init}")
        model, processor = build_model(llm_dir, variant, encoders)
        save_model_and_processor(model, processor, init)
    return init


def _align(recipe: dict[str, Any], init: Path, world: Path, aligned: Path, variant: str) -> Path:
    """The align step: the visual tokens aimed at the LLM's word embeddings."""
    from minigemini.synthetic.recipe.alignment import WordAlignmentConfig, align_visual_tokens

    _done(f"align ({variant}) -> {aligned}")
    config = WordAlignmentConfig(**recipe.get("align", {}))
    return align_visual_tokens(init, [str(world / "captions.json")], aligned, config)


def _chat(recipe: dict[str, Any], init: Path, replay: Path) -> Path:
    """The chat step: the LLM's own answers to plain prompts, for stage 2 to keep its chat."""
    from minigemini.synthetic.recipe.chat_replay import ChatReplayConfig, write_chat_replay

    _done(f"chat -> {replay}")
    return write_chat_replay(init, replay, ChatReplayConfig(**{"prompts": str(CHAT_PROMPTS), **recipe["chat"]}))


def _train_stage(
    recipe: dict[str, Any], stage: int, section: str, data: list[str], previous: Path, stage_dir: Path, variant: str
) -> Path:
    """A training stage on ``data`` from the model in ``previous``, with the recipe's ``section``'s settings (the
    drill step: stage 2's, amended), resumed from its last checkpoint; skipped once it has finished."""
    from minigemini.train.run import SUMMARY_FILE, describe_summary, find_checkpoints, train

    if not (stage_dir / SUMMARY_FILE).is_file():
        _done(f"{section} ({variant}) -> {stage_dir}")
        base = recipe.get("stage2", {}) if section == "drill" else {}
        settings = {
            **base,
            **recipe.get(section, {}),
            "stage": stage,
            "model": str(previous),
            "data": data,
            "output": str(stage_dir),
            "resume": bool(find_checkpoints(str(stage_dir))),
        }
        result = train(TrainConfig.from_sources(None, settings))
        print(describe_summary(result.summary), flush=True)
    return stage_dir
