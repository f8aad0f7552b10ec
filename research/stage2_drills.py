"""Stage 2 with drills beside it: does a share of short count/position dialogues lift those answers?

Continuations of the committed default model (its LoRA merged, fp32), one per arm, each a stage 2 of ``--steps``
steps with minigemini/synthetic/recipe/recipe.yaml's stage-2 settings (LoRA, towers frozen), ``--length-group-steps`` for every arm:
  control   the recipe world's instruction records (seed 0, the default model's world)
  drills    the same records + that world's drills (``mgm data synth --drills count position``: per scene one
            short dialogue of all its count and position questions)
  drills, few captions
            as drills, with the "Describe the image." turn kept in only ``--caption-share`` of the records (the
            captions are ~70 % of the records' answer tokens, so most of what stage 2's loss is made of)
Each model -- the default model too -- answers the ablation's held-out questions (the first ``--per-type`` of each
type from the seed-777 test set, as the README's table) and every count and position question of 300 held-out shape
scenes (``--held-out``, seeds from 900,000), scored as the ablation scores them. A shape scene is a group of 1-9
shapes of one kind and colour beside single shapes of other kinds and colours, so its count questions are scored
apart by truth too: "1" (mostly a single shape) and "2-9" (a group) -- a model that counts shapes without binding
the question's noun to them gets one of the two right, not both. ``--model`` scores other exports beside the arms
(e.g. a full retrain of the recipe with drills), untouched.

    python research/stage2_drills.py --output runs/bench-drills --steps 150 [--model runs/drills-export]
    python research/stage2_drills.py --output runs/bench-drills --only-models --model runs/synthetic-export

Each arm's trained folder is kept in ``--output`` and skipped on a rerun (delete it to train it again).
"""

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from minigemini.evaluation.normalize import vqa_accuracy  # noqa: E402
from minigemini.inference import batch_chat  # noqa: E402
from minigemini.synthetic import world as synthetic  # noqa: E402
from minigemini.synthetic.benchmark import write_test_set  # noqa: E402
from minigemini.synthetic.default_model import DEFAULT_MODEL_DIR, load_default_model  # noqa: E402
from minigemini.synthetic.recipe.pipeline import SYNTHETIC_RECIPE  # noqa: E402

DRILL_TYPES = ("count", "position")
HELD_OUT_SEED = 900_000
DESCRIBE = "Describe the image."


def merged_default_model(folder: Path) -> Path:
    """The default model as a plain fp32 checkpoint (LoRA merged): the base every arm continues from."""
    from minigemini.saving import save_model_and_processor

    if not (folder / "config.json").is_file():
        model, processor = load_default_model(DEFAULT_MODEL_DIR, dtype=torch.float32)
        save_model_and_processor(model, processor, folder)
    return folder


def train_arm(name: str, base: Path, data: list[str], output: Path, steps: int, group_steps: int) -> dict:
    """One continuation (skipped when its merged model exists); returns its training summary."""
    from minigemini.train.config import TrainConfig
    from minigemini.train.lora import merge_lora
    from minigemini.train.run import SUMMARY_FILE, train

    adapter, merged = output / f"{name}-adapter", output / name
    if not (merged / "config.json").is_file():
        stage2 = yaml.safe_load(SYNTHETIC_RECIPE.read_text(encoding="utf-8"))["stage2"]
        settings = {**stage2, "stage": 2, "model": str(base), "data": data, "output": str(adapter),
                    "max_steps": steps, "save_steps": steps, "length_group_steps": group_steps}  # fmt: skip
        train(TrainConfig.from_sources(None, settings))
        merge_lora(str(adapter), str(merged), dtype=torch.float32)
    return json.loads((adapter / SUMMARY_FILE).read_text(encoding="utf-8"))


def few_captions(records: Path, keep: float, output: Path) -> Path:
    """``records`` with each image dialogue's "Describe the image." turn (and its caption) dropped, but in ``keep``
    of them (seeded); a dialogue of that turn alone is kept whole."""
    rng = random.Random(0)
    data = json.loads(records.read_text(encoding="utf-8"))
    for record in data:
        turns = record["conversations"]
        texts = [turn["value"].removeprefix("<image>\n") for turn in turns]
        if "image" not in record or len(turns) <= 2 or DESCRIBE not in texts or rng.random() < keep:
            continue
        at = texts.index(DESCRIBE)
        del turns[at : at + 2]
        if at == 0:
            turns[0]["value"] = f"<image>\n{turns[0]['value']}"
    output.write_text(json.dumps(data), encoding="utf-8")
    return output


def held_out_questions(scenes: int) -> list[tuple]:
    """(image, question, answer, type) for every count and position question of the held-out shape scenes."""
    rows = []
    for seed in range(HELD_OUT_SEED, HELD_OUT_SEED + scenes):
        scene = synthetic.make_scene(seed, kind="shapes")
        rows += [(scene.image, q.text, q.answer, q.type) for q in scene.questions if q.type in DRILL_TYPES]
    return rows


def score(model, processor, rows: list[tuple]) -> dict[str, float]:
    """Percent right per question type (VQA exact match, as the ablation)."""
    answers = batch_chat(model, [(image, text) for image, text, *_ in rows], processor, batch_size=16,
                         max_new_tokens=8, progress=False)  # fmt: skip
    per_type: dict[str, list[float]] = {}
    for (_, _, truth, kind), answer in zip(rows, answers):
        right = vqa_accuracy(answer or "", [truth])
        per_type.setdefault(kind, []).append(right)
        if kind == "count":
            per_type.setdefault("count 1" if truth == "1" else "count 2-9", []).append(right)
    return {kind: 100 * statistics.fmean(s) for kind, s in per_type.items()}


def train_arms(output: Path, args) -> dict[str, tuple[Path, dict | None]]:
    """The default model (merged) and its continuations, each trained unless its folder exists."""
    world_settings = yaml.safe_load(SYNTHETIC_RECIPE.read_text(encoding="utf-8"))["world"]
    if args.scenes is not None:
        world_settings["scenes"] = args.scenes
    world = output / "world"
    if not (world / "drills.json").is_file():
        synthetic.write_world(world, overwrite=True, progress=True, drills=DRILL_TYPES, **world_settings)
    records, drills = str(world / "instructions.json"), str(world / "drills.json")
    base = merged_default_model(output / "default-merged")
    thinned = few_captions(Path(records), args.caption_share, output / "instructions-few-captions.json")
    arms = {"default model": (base, None)}
    for label, folder, data in (("control", "control", [records]), ("drills", "drills", [records, drills]),
                                ("drills, few captions", "drills-few-captions", [str(thinned), drills])):  # fmt: skip
        print(f"[bench] training {label} ({args.steps} steps) ...", flush=True)
        summary = train_arm(folder, base, data, output, args.steps, args.length_group_steps)
        arms[f"+ {args.steps} steps, {label}"] = (output / folder, summary)
    return arms


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="folder for the world, the arms and the test set")
    parser.add_argument("--steps", type=int, default=150, help="stage-2 steps per arm")
    parser.add_argument("--length-group-steps", type=int, default=16)
    parser.add_argument("--per-type", type=int, default=50, help="questions of each type from the seed-777 test set")
    parser.add_argument("--held-out", type=int, default=300, help="held-out shape scenes (seeds from 900,000)")
    parser.add_argument("--scenes", type=int, help="world scenes (default: the recipe's)")
    parser.add_argument("--caption-share", type=float, default=0.25, help="records keeping their description")
    parser.add_argument("--model", type=Path, action="append", default=[], help="also score this export")
    parser.add_argument("--only-models", action="store_true",
                        help="train no arm: score the committed default model and the --model exports")  # fmt: skip
    args = parser.parse_args()
    for folder in args.model:  # checked before any arm trains
        if not (folder / "config.json").is_file():
            parser.error(f"--model {folder}: not an export (no config.json; `mgm train --recipe ... --export`)")
    torch.manual_seed(0)
    output = args.output
    test = output / "test"
    write_test_set(test, 100, 0, 777, reuse=True)
    questions = [json.loads(line) for line in (test / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
    test_rows = []
    for kind in synthetic.QUESTION_TYPES:
        test_rows += [(str(test / q["image"]), q["text"], q["answer"], q["category"])
                      for q in questions if q["category"] == kind][: args.per_type]  # fmt: skip
    held_out = held_out_questions(args.held_out)

    exports = [Path(DEFAULT_MODEL_DIR), *args.model] if args.only_models else args.model
    arms = {} if args.only_models else train_arms(output, args)
    arms.update({str(folder): (folder, None) for folder in exports})
    scores = output / "results.json"  # models already scored are not scored again
    results = json.loads(scores.read_text(encoding="utf-8")) if scores.is_file() else {}
    for name, (folder, summary) in arms.items():
        from minigemini.modeling import MiniGeminiForConditionalGeneration
        from minigemini.processing import MiniGeminiProcessor

        if name in results:
            continue
        if folder in exports:  # an export: the committed-weights layout, LoRA beside the LLM's package
            model, processor = load_default_model(folder, dtype=torch.float32)
        else:
            model = MiniGeminiForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
            processor = MiniGeminiProcessor.from_pretrained(folder)
        started = time.perf_counter()
        results[name] = {"test": score(model, processor, test_rows), "held_out": score(model, processor, held_out),
                         "train_minutes": summary and summary["time_s"] / 60,
                         "tokens_per_s": summary and summary["tokens_per_s"]}  # fmt: skip
        print(f"[bench] {name}: {json.dumps(results[name])} ({time.perf_counter() - started:.0f} s)", flush=True)
        del model
        scores.write_text(json.dumps(results, indent=1), encoding="utf-8")

    n_count = sum(kind == "count" for *_, kind in held_out)
    print(f"\n{torch.get_num_threads()} threads, fp32; {len(test_rows)} test questions; held-out: {n_count} count, "
          f"{len(held_out) - n_count} position\n")  # fmt: skip
    print("| model | train min | " + " | ".join(synthetic.QUESTION_TYPES) + " | reading | held-out count | count 1 "
          "| count 2-9 | position |")  # fmt: skip
    print("|---|---|" + "---|" * (len(synthetic.QUESTION_TYPES) + 5))
    for name in arms:  # in the order trained, whenever each was scored
        r = results[name]
        cells = " | ".join(f"{r['test'][t]:.0f}" for t in synthetic.QUESTION_TYPES)
        reading = statistics.fmean(r["test"][t] for t in synthetic.READING_TYPES)
        minutes = f"{r['train_minutes']:.1f}" if r["train_minutes"] else "-"
        held = " | ".join(f"{r['held_out'][k]:.1f}" if k in r["held_out"] else "-"  # scored before the split
                          for k in ("count", "count 1", "count 2-9", "position"))  # fmt: skip
        print(f"| {name} | {minutes} | {cells} | {reading:.1f} | {held} |")


if __name__ == "__main__":
    main()
