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
    from minigemini.saving import save_model_and_processor
    from minigemini.synthetic.recipe.alignment import WordAlignmentConfig, align_visual_tokens
    from minigemini.synthetic.recipe.chat_replay import ChatReplayConfig, write_chat_replay
    from minigemini.synthetic.recipe.encoders import EncoderPretrainConfig, pretrain_encoders
    from minigemini.synthetic.recipe.reading import ReadingPretrainConfig, pretrain_reading
    from minigemini.synthetic.smollm2 import smollm2_dir
    from minigemini.synthetic.writer import write_world
    from minigemini.train.run import SUMMARY_FILE, describe_summary, find_checkpoints, train

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
    output = Path(output)
    started = time.perf_counter()
    world = output / "world"
    if not (world / "world.json").is_file():
        _done(f"world -> {world}")
        write_world(world, overwrite=True, progress=True, **recipe.get("world", {}))
    captions, instructions = str(world / "captions.json"), str(world / "instructions.json")
    stages = [(1, "stage1", [captions]), (2, "stage2", [instructions])]  # (stage, section, data)
    if "drill" in recipe:  # stage 2's dialogues again with the drills: as a continuation they lift position answers
        drills = world / "drills.json"
        if not drills.is_file():
            raise FileNotFoundError(
                f"the recipe's drill step needs the world's drills but {world} was written without them ({drills} is "
                f"missing): add `drills: [position]` (or other types) under `world:`, remove {world} and the world "
                "step writes it again, the same scenes and dialogues with the drills"
            )
        stages.append((2, "drill", [instructions, str(drills)]))

    llm_dir = recipe.get("llm") or smollm2_dir()
    encoders = output / "encoders"
    from transformers import AutoConfig

    tower_config = synthetic_config(AutoConfig.from_pretrained(llm_dir).to_dict(), "mining")
    _done(f"encoders -> {encoders}")
    encoders_file = pretrain_encoders(
        tower_config, [captions], [], encoders, EncoderPretrainConfig(**recipe.get("encoders", {}))
    )
    if "read" in recipe:
        reading = output / "reading"
        _done(f"read -> {reading}")
        config = ReadingPretrainConfig(**recipe["read"])
        encoders_file = pretrain_reading(tower_config, encoders_file, [captions], reading, config)

    folder = output / variant
    init = folder / "init"
    if not (init / "config.json").is_file():
        _done(f"init ({variant}) -> {init}")
        model, processor = build_model(llm_dir, variant, encoders_file)
        save_model_and_processor(model, processor, init)
        del model

    aligned = folder / "aligned"
    _done(f"align ({variant}) -> {aligned}")
    previous = align_visual_tokens(init, [captions], aligned, WordAlignmentConfig(**recipe.get("align", {})))
    if "chat" in recipe:  # the LLM is untouched until stage 2, so init answers as SmolLM2 does, in the chat template
        replay = output / "chat" / "replay.json"
        _done(f"chat -> {replay}")
        answers = write_chat_replay(init, replay, ChatReplayConfig(**{"prompts": str(CHAT_PROMPTS), **recipe["chat"]}))
        for _, section, data in stages[1:]:
            data.append(str(answers))
    for stage, section, data in stages:
        stage_dir = folder / section
        if not (stage_dir / SUMMARY_FILE).is_file():
            _done(f"{section} ({variant}) -> {stage_dir}")
            base = recipe.get("stage2", {}) if section == "drill" else {}  # the drill step: stage 2's settings, amended
            settings = {**base, **recipe.get(section, {}), "stage": stage, "model": str(previous), "data": data,
                        "output": str(stage_dir), "resume": bool(find_checkpoints(str(stage_dir)))}  # fmt: skip
            result = train(TrainConfig.from_sources(None, settings))
            print(describe_summary(result.summary), flush=True)
            del result
        previous = stage_dir
    _done(f"{variant} trained in {output} ({(time.perf_counter() - started) / 60:.1f} min this run)")
    if export is not None:
        exported = export_default_model(previous, export)
        _done(f"exported to {exported}")
    return previous
