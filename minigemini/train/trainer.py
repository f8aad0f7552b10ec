"""MiniGeminiTrainer: the Hugging Face Trainer with the few things Mini-Gemini training needs.

- ``_get_train_sampler``: modality + length grouped batches (``data.sampler``), or sequential / random;
- ``get_train_dataloader``: a ShardStream's own loader (every rank reads its own shards), resumed by ``StreamResume``;
- ``create_optimizer``: a separate learning rate for the mining layer and the projector (``projector_lr``);
- ``_prepare_inputs``: takes the collator's ``data_stats`` (samples, runtime skips) out of the batch and counts them
  (in ``DataTotals``, a callback whose counts travel in checkpoints, so a resumed run reports the whole run's);
- ``training_step`` / ``_get_grad_norm``: the non-finite guard (``guard.NonFiniteGuard``) sees each micro-batch's
  samples, supervised tokens and loss, and before each optimizer step decides with the other processes to take it,
  skip it (the optimizer's step pre-hook drops the gradients) or stop the run;
- ``compute_loss``: keeps every trainable parameter in the graph with a zero term, so text-only batches, batches whose
  samples were all skipped, or unused MoE experts never make DDP (or a frozen-LLM backward) fail.

Everything else -- mixed precision, gradient accumulation and checkpointing, schedules, checkpoints, resuming, DDP,
FSDP, DeepSpeed -- is the Trainer's own.
"""

from __future__ import annotations

from collections import Counter

import torch
from accelerate.utils import gather_object
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from minigemini.data.collator import DATA_STATS_KEY
from minigemini.data.sampler import ModalityLengthGroupedSampler
from minigemini.data.stream import ShardStream
from minigemini.train.config import NONFINITE_PATIENCE
from minigemini.train.engines import Engine, enable_fsdp_on_cpu
from minigemini.train.guard import NonFiniteGuard
from minigemini.train.stages import is_multimodal_parameter

__all__ = ["DataTotals", "MiniGeminiTrainer", "StreamResume"]


class DataTotals(TrainerCallback, ExportableState):
    """Samples trained on, records skipped while loading and (streamed data) samples truncated, carried through
    checkpoints.

    Each checkpoint stores the totals over all processes (``state``); resuming, the Trainer builds a new instance with
    them as ``carried`` (``restore_callback_states_from_checkpoint``), so the summary counts the whole run.
    """

    def __init__(self):
        self.samples = 0  # this process, this run
        self.truncated = 0  # this process, this run: samples a ShardStream cut to max_length
        self.skipped: dict[str, str] = {}  # source -> reason (a bad image is counted once, not once per epoch)
        # all processes, up to the checkpoint resumed from
        self.carried: dict = {"samples": 0, "skipped": {}, "truncated": 0}
        self._at_checkpoint = self.carried

    def totals(self) -> dict:
        """{"samples": n, "skipped": {source: reason}, "truncated": n} over all processes and the run so far (call on
        every rank)."""
        gathered = gather_object([(self.samples, self.skipped, self.truncated)])  # one triple per process
        skipped = dict(self.carried["skipped"])
        for _, part, _ in gathered:
            skipped.update(part)
        return {
            "samples": self.carried["samples"] + sum(n for n, _, _ in gathered),
            "skipped": skipped,
            "truncated": self.carried.get("truncated", 0) + sum(t for _, _, t in gathered),
        }

    # The Trainer sets should_save in its own (first) callback's hooks, then saves after every callback has run.
    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self._at_checkpoint = self.totals()

    on_epoch_end = on_step_end  # saves may also come at the end of an epoch

    def state(self) -> dict:
        return {"args": {}, "attributes": {"carried": self._at_checkpoint}}


class StreamResume(TrainerCallback):
    """Tells a ShardStream how many micro-batches this rank has trained on (none, or those of the checkpoint resumed
    from), before the DataLoader starts its workers; the stream then starts exactly there (the Trainer's own skipping,
    which reads and discards, is off: ``ignore_data_skip``)."""

    def __init__(self, stream: ShardStream):
        self.stream = stream

    def on_train_begin(self, args, state, control, **kwargs):
        self.stream.resume(state.global_step * args.gradient_accumulation_steps)


class MiniGeminiTrainer(Trainer):
    """Trainer with Mini-Gemini's sampler, projector learning rate and data accounting.

    Extra args:
        projector_lr: learning rate of the mining layer and projector (default: ``args.learning_rate``).
        sampler: "modality_length" (needs ``train_dataset.modality_lengths``), "random" or "sequential".
        length_group_steps: with "modality_length", how many steps' samples are sorted by length together.
        full_logits: passed to the model's forward in training; None lets the model compute the LM head at supervised
            positions only (same loss, much less memory), True computes it everywhere.
        max_nonfinite_steps: non-finite steps in a row that stop the run (0: never; ``guard.NonFiniteGuard``).
    """

    def __init__(
        self,
        *args,
        projector_lr: float | None = None,
        sampler: str = "modality_length",
        length_group_steps: int = 1,
        full_logits: bool | None = None,
        max_nonfinite_steps: int = NONFINITE_PATIENCE,
        **kwargs,
    ):
        self.max_nonfinite_steps = max_nonfinite_steps
        self.projector_lr = projector_lr
        self.length_group_steps = length_group_steps
        self.full_logits = full_logits
        self.sampler_kind = sampler
        super().__init__(*args, **kwargs)
        self.add_callback(DataTotals())
        self.add_callback(NonFiniteGuard())
        if isinstance(self.train_dataset, ShardStream):
            self.add_callback(StreamResume(self.train_dataset))

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if enable_fsdp_on_cpu(self.accelerator, self.args):
            self.is_fsdp_enabled = True

    # ------------------------------------------------------------------------------------------ data

    def get_train_dataloader(self):
        if not isinstance(self.train_dataset, ShardStream):
            return super().get_train_dataloader()
        # Not through accelerate's prepare, which would have every rank read the whole stream (or rank 0 read it for
        # all): each rank's stream already reads its own shards.  The Trainer moves the batches to the device.
        return self.train_dataset.loader(self.data_collator, pin_memory=self.args.dataloader_pin_memory)

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.sampler_kind == "sequential":
            return SequentialSampler(dataset)
        if self.sampler_kind == "modality_length" and hasattr(dataset, "modality_lengths"):
            return ModalityLengthGroupedSampler(
                dataset.modality_lengths,
                batch_size=self.args.per_device_train_batch_size,
                world_size=self.args.world_size,
                accumulation_steps=self.args.gradient_accumulation_steps,
                seed=self.args.seed,
                length_group_steps=self.length_group_steps,
            )
        return super()._get_train_sampler(train_dataset)

    def _prepare_inputs(self, inputs):
        stats = inputs.get(DATA_STATS_KEY) if isinstance(inputs, dict) else None
        if stats is not None:
            inputs = {k: v for k, v in inputs.items() if k != DATA_STATS_KEY}
            if self.model.training:
                totals = self._data_totals
                totals.samples += int(stats["samples"])
                totals.skipped.update((skip.source, skip.reason) for skip in stats["skipped"])
                totals.truncated += int(stats.get("truncated", 0))
        if self.full_logits is not None and self.model.training:
            inputs = {**inputs, "full_logits": self.full_logits}
        if self.model.training and not self._touch_trainable and "high_res_pixel_values" not in inputs:
            inputs = {**inputs, **self._no_images()}  # the model runs its encoders on a blank image, weighted 0
        return super()._prepare_inputs(inputs)

    def _no_images(self) -> dict:
        """Empty image tensors (0 images) of the model's shapes: see MiniGeminiModel.forward."""
        config = self.accelerator.unwrap_model(self.model).config
        size, views = config.vision_config.image_size, config.num_views
        lr_shape = (0, 3, size, size) if views == 1 else (0, views, 3, size, size)
        return {
            "pixel_values": torch.zeros(lr_shape),
            "high_res_pixel_values": torch.zeros(0, 3, config.image_size_aux, config.image_size_aux),
        }

    # ------------------------------------------------------------------------------------------ optimisation

    def training_step(self, model, inputs, num_items_in_batch=None):
        stats = inputs.get(DATA_STATS_KEY) or {}
        self._guard.see_batch(inputs, stats.get("sources"))
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._guard.see_loss(loss)
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # called once per optimizer step, after clipping and before the step: where the guard decides
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        # fp16: the loss scaler (torch's, or DeepSpeed's own) skips its overflows and lowers its scale
        scaler = self.accelerator.scaler is not None or (self.engine.is_deepspeed and self.args.fp16)
        self._guard.decide(self, grad_norm, self.max_nonfinite_steps, scaler_handles_overflow=scaler)
        return grad_norm

    def create_optimizer(self, model=None):
        optimizer = self._create_optimizer(model)
        if not getattr(optimizer, "_mgm_hooked", False):
            optimizer.register_step_pre_hook(self._before_optimizer_step)
            optimizer._mgm_hooked = True
        return optimizer

    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        if self.engine.is_deepspeed:
            return  # DeepSpeed steps inside its backward and skips non-finite gradients itself
        if self._guard.skipping:  # no gradient: AdamW leaves the weights and its moments as they were
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    parameter.grad = None
        elif self.engine.is_fsdp:
            _zero_missing_grads(optimizer)

    def _create_optimizer(self, model=None):
        if self.optimizer is not None or self.projector_lr is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, parameter in opt_model.named_parameters():
            if parameter.requires_grad:
                groups.setdefault((is_multimodal_parameter(name), name in decay), []).append(parameter)
        param_groups = []
        for (multimodal, decayed), params in sorted(groups.items()):
            group = {"params": params, "weight_decay": self.args.weight_decay if decayed else 0.0}
            if multimodal:
                group["lr"] = self.projector_lr
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        loss = result[0] if return_outputs else result
        if model.training and (not loss.requires_grad or self._touch_trainable):
            # Zero-valued, but every trainable parameter gets a gradient: DDP's reducer expects one for each, and a
            # batch without images (or without supervised tokens) under a frozen LLM would have no graph at all.
            anchor = sum(p.reshape(-1)[:1].sum() for p in self._trainable_parameters())
            loss = loss + 0.0 * anchor
            result = (loss, result[1]) if return_outputs else loss
        return result

    @property
    def engine(self) -> Engine:
        return Engine.of_trainer(self)

    @property
    def _touch_trainable(self) -> bool:
        # sharding engines handle unused parameters themselves; touching shards there is unsafe
        return not self.engine.sharded

    def _trainable_parameters(self):
        if not hasattr(self, "_trainable_cache"):
            self._trainable_cache = [p for p in self.model.parameters() if p.requires_grad]
        return self._trainable_cache

    # ------------------------------------------------------------------------------------------ accounting

    @property
    def _guard(self) -> NonFiniteGuard:
        # looked up each time, as _data_totals
        return next(c for c in self.callback_handler.callbacks if isinstance(c, NonFiniteGuard))

    def guard_counts(self) -> dict:
        """Optimizer steps skipped as non-finite, micro-batches and steps without supervised tokens (whole run)."""
        counts = dict(self._guard.counts)
        counts.pop("in_a_row")
        return counts

    @property
    def _data_totals(self) -> DataTotals:
        # looked up each time: resuming replaces the instance with one carrying the checkpoint's counts
        return next(c for c in self.callback_handler.callbacks if isinstance(c, DataTotals))

    def data_totals(self) -> dict:
        """Samples trained on and records skipped while loading, over all processes and the whole run, resumed parts
        included (call on every rank): {"samples": n, "skipped": {reason: count}, "truncated": n (streamed data)}."""
        totals = self._data_totals.totals()
        return {**totals, "skipped": dict(Counter(totals["skipped"].values()))}


def _zero_missing_grads(optimizer) -> None:
    """Under FSDP, a trainable parameter that got no gradient (the mining layer's key LayerNorm bias never does: the
    softmax over a window ignores it) gets a zero one, so every parameter has optimizer state: a sharded checkpoint
    then holds the state of each, as resuming it expects (DDP gets the same zeros from ``compute_loss``)."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
