"""One training run, from a TrainConfig: data (checked first), model, stage, LoRA, Trainer, checkpoints, summary.

The same function runs in one process or under a launcher (``torchrun``, ``accelerate launch``, ``deepspeed``): the
Trainer reads the launcher's environment, and the gradient accumulation is derived from the global batch and the
number of processes.  DeepSpeed is imported only when a DeepSpeed config is given.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import os
import re
import time
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from minigemini.data import MiniGeminiCollator, SupervisedDataset
from minigemini.data.shards import is_shard_source
from minigemini.data.stream import ShardStream
from minigemini.errors import UserError, require
from minigemini.modeling import MiniGeminiForConditionalGeneration
from minigemini.precision import resolve_precision
from minigemini.processing import MiniGeminiProcessor
from minigemini.quantization import checkpoint_quantization
from minigemini.train.callbacks import JsonlLogCallback, ProgressBarCallback
from minigemini.train.config import MODEL_TEMPLATE, TrainConfig
from minigemini.train.engines import (
    Engine,
    check_deepspeed_config,
    check_resume_engine,
    consolidate_final_save,
    fsdp_settings,
    launch_alone,
    on_accelerator,
    quiet_deepspeed_comm,
    read_deepspeed_config,
    run_engine,
    start_deepspeed_comm,
)
from minigemini.train.stages import configure_trainable, parameter_counts, upcast_trainable
from minigemini.train.trainer import MiniGeminiTrainer

__all__ = [
    "LOG_FILE",
    "SUMMARY_FILE",
    "TrainResult",
    "build_dataset",
    "build_training_arguments",
    "describe_summary",
    "load_model",
    "prepare_for_stage",
    "train",
]

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "train_summary.json"
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass
class TrainResult:
    output: str
    summary: dict[str, Any]
    trainer: MiniGeminiTrainer


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _load_dtype(config: TrainConfig, engine: Engine) -> torch.dtype:
    """Half precision for what stays frozen (trainable parameters are upcast after, unless the engine casts the whole
    model itself), except where the engine keeps fp32 parameters (FSDP)."""
    half = _HALF.get(config.precision)
    return torch.float32 if half is None or engine.fp32_parameters else half


def streamed(config: TrainConfig) -> bool:
    """Shards (folders, Parquet/Arrow/tar files, ``hf:NAME``) are streamed; LLaVA JSON files are read whole."""
    shards = [is_shard_source(path) for path in config.data]
    if any(shards) and not all(shards):
        raise UserError("--data mixes JSON files and shards: convert the JSON with `mgm data shard` first")
    return any(shards)


def build_dataset(config: TrainConfig, processor: MiniGeminiProcessor) -> SupervisedDataset | ShardStream:
    """The training data with the stage's template and image preprocessing (stage 1: no padding to square)."""
    template = processor.template_name if config.template == MODEL_TEMPLATE else config.template
    image_processor = processor.image_processor
    if config.pad_to_square is not None and config.pad_to_square != image_processor.pad_to_square:
        image_processor = copy.deepcopy(image_processor)
        image_processor.pad_to_square = config.pad_to_square
    if streamed(config):
        accumulation = config.accumulation_steps(world_size())
        grouped = config.sampler == "modality_length"
        return ShardStream(
            config.data,
            processor,
            template=template,
            max_length=config.max_length,
            image_processor=image_processor,
            batch_size=config.per_device_batch_size,
            num_workers=config.dataloader_workers,
            accumulation_steps=accumulation,
            seed=config.seed,
            buffer_size=config.shuffle_buffer,
            length_group=accumulation * config.length_group_steps if grouped else 0,
        )
    return SupervisedDataset(
        config.data,
        processor,
        image_folders=config.image_folder or None,
        template=template,
        max_length=config.max_length,
        image_processor=image_processor,
        verify_images=config.verify_images,
    )


def lora_to_continue(config: TrainConfig) -> str | None:
    """The LoRA adapter folder ``config.model`` names (training goes on in that adapter), or None for a checkpoint."""
    from minigemini.train.lora import ADAPTER_CONFIG

    return config.model if os.path.isfile(os.path.join(config.model, ADAPTER_CONFIG)) else None


def starting_checkpoint(config: TrainConfig) -> str:
    """The checkpoint training starts from: ``config.model``, or the base of the LoRA adapter it names."""
    from minigemini.train.lora import adapter_base

    adapter = lora_to_continue(config)
    return config.model if adapter is None else adapter_base(adapter)


def quantized_device() -> torch.device:
    """Where a QLoRA run places its quantised model (the Trainer does not move it): this rank's GPU, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def load_model(config: TrainConfig, processor: MiniGeminiProcessor) -> MiniGeminiForConditionalGeneration:
    """Load the starting checkpoint (an adapter's base) in the dtype the precision and engine want (``_load_dtype``)."""
    half = _HALF.get(config.precision)
    kwargs: dict[str, Any] = {"dtype": _load_dtype(config, run_engine(config))}
    if config.bits != 16:
        from minigemini.train.lora import quantization_config

        device = quantized_device()
        kwargs["quantization_config"] = quantization_config(config.bits, device, half or torch.bfloat16)
        kwargs["device_map"] = {"": device}
    model = MiniGeminiForConditionalGeneration.from_pretrained(os.path.abspath(starting_checkpoint(config)), **kwargs)
    # Loaded under ZeRO-3 (partitioned while loading), transformers also keeps the legacy renamings it checked the
    # file against and would save the trained model back under those old names: this package's names stay.
    model._weight_conversions = []
    vocab = model.config.text_config.vocab_size
    if len(processor.tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer has {len(processor.tokenizer)} tokens but the LLM embeds only {vocab}: the model "
            "directory was not prepared for this processor (resize the embeddings, as `mgm init` does)"
        )
    if model.config.image_token_id != processor.image_token_id:
        raise ValueError(
            f"the model's image_token_id {model.config.image_token_id} differs from the processor's "
            f"{processor.image_token_id}"
        )
    if model.config.image_seq_length != processor.image_seq_length:
        raise ValueError(
            f"the processor expands <image> to {processor.image_seq_length} tokens but the model makes "
            f"{model.config.image_seq_length} per image"
        )
    return model


def prepare_for_stage(model, config: TrainConfig):
    """requires_grad for the stage; LoRA / QLoRA wrapping; trainable parameters kept in fp32 (unless the engine casts
    the whole model itself)."""
    fp32 = not run_engine(config).casts_model
    if config.bits != 16:
        import peft

        model = peft.prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    configure_trainable(
        model, config.stage, config.tune_vision, config.tune_vision_aux, train_llm=False if config.lora else None
    )
    adapter = lora_to_continue(config)
    if adapter is not None:
        from minigemini.train.lora import continue_lora

        model = continue_lora(model, adapter, adapter_fp32=fp32)
        kept = model.peft_config["default"]
        if (kept.r, kept.lora_alpha) != (config.lora_r, config.lora_alpha):
            logger.warning(
                "%s goes on at its own LoRA rank %d and alpha %d (the settings' %d and %d are not used)",
                *(adapter, kept.r, kept.lora_alpha, config.lora_r, config.lora_alpha),
            )
    elif config.lora:
        from minigemini.train.lora import apply_lora

        extra = tuple(
            name
            for name, on in (("vision_tower", config.tune_vision), ("vision_tower_aux", config.tune_vision_aux))
            if on
        )
        model = apply_lora(
            model,
            config.lora_r,
            config.lora_alpha,
            config.lora_dropout,
            extra_modules_to_save=extra,
            adapter_fp32=fp32,
        )
    if (next(model.parameters()).dtype != torch.float32 and fp32) or config.bits != 16:
        upcast_trainable(model)
    return model


def build_training_arguments(config: TrainConfig, accumulation_steps: int) -> TrainingArguments:
    """The settings a Trainer field takes as they are (``TrainConfig.trainer_arguments``), those derived from the
    settings, and this package's fixed choices."""
    return TrainingArguments(
        **config.trainer_arguments(),
        gradient_accumulation_steps=accumulation_steps,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        activation_checkpointing=config.gradient_checkpointing and config.bits == 16,
        ignore_data_skip=streamed(config),  # a ShardStream resumes by itself, without reading what it skips
        use_cpu=not on_accelerator(),
        fsdp=bool(config.fsdp),  # its options are in fsdp_config
        fsdp_config=fsdp_settings(config.fsdp, config.fsdp_config),
        **_FIXED_ARGUMENTS,
    )


_FIXED_ARGUMENTS = {
    "activation_checkpointing_kwargs": {"use_reentrant": False},
    "save_strategy": "steps",
    "remove_unused_columns": False,
    "include_num_input_tokens_seen": "non_padding",
    "restore_callback_states_from_checkpoint": True,  # DataTotals: a resumed run reports the whole run's samples
    "ddp_find_unused_parameters": False,  # every trainable parameter is kept in the graph (see MiniGeminiTrainer)
    "disable_tqdm": True,
}


def _check_launch(config: TrainConfig, engine: Engine, accumulation: int) -> str | None:
    """Fail early on a launch that cannot work; returns the checkpoint to resume from (with --resume)."""
    if engine.is_deepspeed:
        deepspeed_config = read_deepspeed_config(config.deepspeed)
        batch = {
            "train_batch_size": config.global_batch_size,
            "train_micro_batch_size_per_gpu": config.per_device_batch_size,
            "gradient_accumulation_steps": accumulation,
        }
        check_deepspeed_config(config.deepspeed, deepspeed_config, batch)
        require("deepspeed")
    if config.lora and importlib.util.find_spec("peft") is None:
        raise UserError("--lora needs the peft package: pip install peft")
    if lora_to_continue(config) is not None and not config.lora:
        raise UserError(
            f"--model {config.model} is a LoRA adapter: pass --lora to train it further, or merge it into a checkpoint "
            "first (`mgm merge-lora`) to train without LoRA"
        )
    saved = checkpoint_quantization(starting_checkpoint(config))
    if saved is not None and not config.lora:
        raise UserError(
            f"{starting_checkpoint(config)} was saved quantized ({saved}) and its quantized weights cannot train: "
            "add --lora, or start from its full-precision checkpoint"
        )
    if config.bits != 16:
        from minigemini.train.lora import quantization_config

        quantization_config(config.bits, quantized_device(), torch.float32)  # bitsandbytes and the device, checked
    found = find_checkpoints(config.output)
    if not config.resume:
        if found:
            raise FileExistsError(
                f"{config.output} already has {os.path.basename(found[-1][0])}: pass --resume to continue that run, "
                "or choose another --output"
            )
        return None
    complete = [path for path, done in found if done]
    incomplete = [os.path.basename(path) for path, done in found if not done]
    if incomplete:
        logger.warning(
            "--resume: skipping incomplete checkpoint(s) %s (no readable %s: the run stopped while saving them); "
            "left in place",
            ", ".join(incomplete),
            TRAINER_STATE_NAME,
        )
    if not complete:
        detail = f" (incomplete: {', '.join(incomplete)})" if incomplete else ""
        raise FileNotFoundError(f"--resume: no complete checkpoint-* folder in {config.output} to resume from{detail}")
    check_resume_engine(complete[-1], engine, world_size())
    return complete[-1]


def find_checkpoints(folder: str) -> list[tuple[str, bool]]:
    """The ``checkpoint-N`` folders in ``folder``, by step, each with whether it is complete.

    Complete means its ``trainer_state.json`` is there and parses: the Trainer writes it last, after the weights,
    optimizer, scheduler and RNG states (and before deleting older checkpoints), so a job killed while saving leaves
    a checkpoint without it, or with a truncated one, which must not be resumed from.
    """
    if not os.path.isdir(folder):
        return []
    steps = {}
    for name in os.listdir(folder):
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)
        if match and os.path.isdir(os.path.join(folder, name)):
            steps[int(match.group(1))] = os.path.join(folder, name)
    return [(steps[step], _is_complete(steps[step])) for step in sorted(steps)]


def _checkpoint_step(checkpoint: str) -> int:
    with open(os.path.join(checkpoint, TRAINER_STATE_NAME), encoding="utf-8") as f:
        return int(json.load(f).get("global_step", 0))


def _is_complete(checkpoint: str) -> bool:
    try:
        with open(os.path.join(checkpoint, TRAINER_STATE_NAME), encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True


def train(config: TrainConfig, callbacks: list | None = None) -> TrainResult:
    """Run one training stage; returns the output folder and the summary (also written as train_summary.json).

    ``callbacks``: extra ``TrainerCallback``s (the progress bar and the JSONL log are always added).
    """
    config.validate()
    config = dataclasses.replace(config, precision=resolve_precision(config.precision))
    accumulation = config.accumulation_steps(world_size())
    engine = run_engine(config)
    resume_from = _check_launch(config, engine, accumulation)
    if resume_from is not None and int(os.environ.get("RANK", "0")) == 0:
        logger.info("--resume: continuing from %s (step %d)", resume_from, _checkpoint_step(resume_from))
    started = time.time()
    processor = MiniGeminiProcessor.from_pretrained(config.processor or config.model)
    dataset = build_dataset(config, processor)  # bad data fails here, before the model is loaded
    if config.dataloader_workers > 0:
        # the scan above used the tokenizer's threads; say so before the DataLoader forks its workers
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Before the model: with ZeRO-3 the arguments make from_pretrained load the weights already partitioned.
    if engine.is_deepspeed:
        quiet_deepspeed_comm()
        launch_alone()
    args = build_training_arguments(config, accumulation)
    if engine.is_deepspeed:
        start_deepspeed_comm()

    model = prepare_for_stage(load_model(config, processor), config)
    counts = parameter_counts(model)
    logger.info(
        "stage %d: %s of %s parameters trainable", config.stage, f"{counts['trainable']:,}", f"{counts['total']:,}"
    )
    trainer = _build_trainer(config, model, args, dataset, processor, callbacks)
    output = trainer.train(resume_from_checkpoint=resume_from)
    consolidate_final_save(trainer)
    trainer.save_model(config.output)

    summary = {
        "stage": config.stage,
        "output": os.path.abspath(config.output),
        "lora": config.lora,
        **_run_counts(trainer, output, dataset, time.time() - started),
        "trainable_parameters": counts["trainable"],
        "total_parameters": counts["total"],
        "world_size": args.world_size,
        "distributed": trainer.accelerator.distributed_type.value,  # NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED
        "gradient_accumulation_steps": accumulation,
        "config": config.to_dict(),
    }
    if trainer.is_world_process_zero():
        with open(os.path.join(config.output, SUMMARY_FILE), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    return TrainResult(output=config.output, summary=summary, trainer=trainer)


def _build_trainer(config: TrainConfig, model, args, dataset, processor, callbacks) -> MiniGeminiTrainer:
    """The Trainer with the JSONL log (and the progress bar) in place of the Trainer's own printing."""
    callbacks = [JsonlLogCallback(os.path.join(config.output, LOG_FILE)), *(callbacks or [])]
    if config.progress:
        callbacks.append(ProgressBarCallback())
    trainer = MiniGeminiTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=MiniGeminiCollator(pad_token_id=processor.tokenizer.pad_token_id),
        processing_class=processor,
        callbacks=callbacks,
        projector_lr=config.projector_lr,
        sampler=config.sampler,
        length_group_steps=config.length_group_steps,
        full_logits=None if config.supervised_head else True,
        max_nonfinite_steps=config.max_nonfinite_steps,
    )
    for default in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(default)
    return trainer


def _run_counts(trainer: MiniGeminiTrainer, output, dataset, elapsed: float) -> dict[str, Any]:
    """Steps, samples, skips, truncations, tokens and speed of the finished run (resumed parts included)."""
    totals = trainer.data_totals()
    skipped = dict(dataset.skips.counts)
    for reason, count in totals["skipped"].items():
        skipped[reason] = skipped.get(reason, 0) + count
    runtime = output.metrics.get("train_runtime", elapsed)
    tokens = trainer.state.num_input_tokens_seen
    return {
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "dataset_samples": getattr(dataset, "num_samples", len(dataset)),
        "samples_seen": totals["samples"],
        "skipped": dict(sorted(skipped.items())),
        "skipped_total": sum(skipped.values()),
        "truncated": totals["truncated"],
        "tokens": tokens,
        "time_s": round(runtime, 3),
        "tokens_per_s": round(tokens / runtime, 1) if runtime > 0 else None,
        "train_loss": output.metrics.get("train_loss"),
        **trainer.guard_counts(),
    }


def describe_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines for the end of a run."""
    lines = [
        (
            f"Stage {summary['stage']}{' (LoRA)' if summary['lora'] else ''}: "
            f"{summary['steps']} step{'' if summary['steps'] == 1 else 's'}, "
            f"{summary['samples_seen']:,} samples seen ({summary['dataset_samples']:,} in the data), "
            f"{summary['tokens']:,} tokens in {summary['time_s']:.1f} s "
            f"({summary['tokens_per_s'] or 0:,.0f} tokens/s), train loss {summary['train_loss'] or float('nan'):.4f}"
        ),
    ]
    if summary["skipped_total"]:
        reasons = ", ".join(f"{reason} {count}" for reason, count in summary["skipped"].items())
        lines.append(f"Skipped {summary['skipped_total']} record(s): {reasons}")
    else:
        lines.append("Skipped 0 records")
    if summary.get("nonfinite_steps"):
        lines.append(f"Skipped {summary['nonfinite_steps']} optimizer step(s) with a non-finite loss or gradient norm")
    if summary.get("empty_batches"):
        lines.append(
            f"{summary['empty_batches']} micro-batch(es) had no supervised token ({summary['empty_steps']} whole "
            "step(s) skipped)"
        )
    if summary["truncated"]:
        lines.append(f"Truncated {summary['truncated']} over-long sample(s) (image tokens kept)")
    lines.append(f"Saved to {summary['output']} ({LOG_FILE}, {SUMMARY_FILE} beside the weights)")
    return "\n".join(lines)
