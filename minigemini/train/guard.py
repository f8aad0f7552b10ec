"""The non-finite guard: an optimizer step whose loss or gradient norm is NaN or infinite is skipped, counted and
named by its samples; too many in a row stop the run with one line.

Every process takes the same decision: the step's flags (a non-finite loss on this process, a non-finite gradient
norm, the supervised tokens) are summed over the processes (``accelerator.reduce``) before the optimizer step, so
under DDP, FSDP and ZeRO all ranks skip, train or stop together and none waits for another.

Skipping a step: every gradient is dropped (``grad = None``) in the optimizer's step pre-hook, so AdamW leaves the
weights and its moments as they were (the scheduler and the step counter go on).  DeepSpeed steps inside its own
backward and skips a step whose gradient norm is not finite itself (its ZeRO optimizers' overflow check); the guard
counts and stops there too.  Under fp16 the loss scaler's own overflows are not counted (it skips them and lowers
its scale: that is how it works), only non-finite losses.

A step with no supervised token on any process (every answer cut, every sample skipped) is not trained on either
(its zero gradient would still move AdamW's weights) and is counted apart.
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint

from minigemini.errors import UserError
from minigemini.modeling import IGNORE_INDEX

__all__ = ["NonFiniteGuard", "NonFiniteTrainingError"]

_SHOWN_SAMPLES = 8  # samples named in a message


class NonFiniteTrainingError(UserError):
    """Training stopped after too many non-finite steps in a row (one line; the last good checkpoint is kept)."""


class NonFiniteGuard(TrainerCallback, ExportableState):
    """The guard's counts (carried through checkpoints) and the state of the step being accumulated.

    A resumed run's guard is built from the checkpoint's ``counts`` (``restore_callback_states_from_checkpoint``);
    its steps in a row start again from 0 (the run was resumed to try again).
    """

    def __init__(self, counts: dict | None = None):
        self.counts = {"nonfinite_steps": 0, "empty_batches": 0, "empty_steps": 0, **(counts or {}), "in_a_row": 0}
        self.skipping = False  # the step being taken is skipped (read by the optimizer's pre-hook)
        self._reset_window()

    def _reset_window(self) -> None:
        self._loss_bad = False
        self._losses: list[float] = []
        self._sources: list[str] = []
        self._supervised = 0
        self._empty = 0

    # ------------------------------------------------------------------------------------------ each micro-batch

    def see_batch(self, inputs: dict, sources: list[str] | None) -> None:
        """Before the forward pass: the micro-batch's samples and supervised tokens."""
        self._sources.extend(sources or [])
        labels = inputs.get("labels")
        supervised = int((labels[:, 1:] != IGNORE_INDEX).sum()) if labels is not None else 1
        self._supervised += supervised
        self._empty += supervised == 0

    def see_loss(self, loss: torch.Tensor) -> None:
        value = float(loss.detach().float())
        self._losses.append(value)
        self._loss_bad |= not math.isfinite(value)

    # ------------------------------------------------------------------------------------------ each optimizer step

    def decide(self, trainer, grad_norm, patience: int, scaler_handles_overflow: bool) -> None:
        """Before the optimizer step, on every process: skip it (``skipping``), or raise ``NonFiniteTrainingError``
        after ``patience`` non-finite steps in a row (0: never)."""
        norm = float(grad_norm) if grad_norm is not None else 0.0
        norm_bad = not math.isfinite(norm) and not scaler_handles_overflow
        flags = torch.tensor(
            [float(self._loss_bad), float(norm_bad), float(self._supervised), float(self._empty)],
            device=trainer.args.device,
        )
        loss_bad, norm_bad, supervised, empty = trainer.accelerator.reduce(flags, "sum").tolist()
        self.counts["empty_batches"] += int(empty)
        self.skipping = bool(loss_bad or norm_bad or supervised == 0)
        if supervised == 0:  # (its loss may be 0 / 0 with --no-supervised-head): neither good nor bad
            self.counts["empty_steps"] += 1
        elif loss_bad or norm_bad:
            self._on_nonfinite(trainer, norm, patience)
        else:
            self.counts["in_a_row"] = 0
        self._reset_window()

    def _on_nonfinite(self, trainer, norm: float, patience: int) -> None:
        from accelerate.utils import gather_object

        samples = [source for part in gather_object([self._sources]) for source in part]
        self.counts["nonfinite_steps"] += 1
        self.counts["in_a_row"] += 1
        step = trainer.state.global_step + 1
        losses = ", ".join(f"{value:.4g}" for value in self._losses)
        what = f"step {step}: non-finite loss ({losses}) or gradient norm ({norm:.4g}) with {_named(samples)}"
        if patience and self.counts["in_a_row"] >= patience:
            raise NonFiniteTrainingError(self._stop_message(trainer, what, patience))
        if trainer.is_world_process_zero():
            print(f"warning: {what}: optimizer step skipped", flush=True)

    def _stop_message(self, trainer, what: str, patience: int) -> str:
        output = trainer.args.output_dir
        last = get_last_checkpoint(output) if output else None
        kept = (
            f"the last checkpoint, {last}, is kept: continue from it with --resume once the cause is mended"
            if last
            else "no checkpoint was saved before, and no model is written"
        )
        causes = [f"a learning rate too high (--lr {trainer.args.learning_rate:g})", "bad samples"]
        if trainer.args.fp16:
            causes.insert(1, "fp16 overflow (--precision bf16 or fp32)")
        return (
            f"training stopped at {what}: {self.counts['in_a_row']} non-finite steps in a row (--max-nonfinite-steps "
            f"{patience}). Likely causes: {', '.join(causes[:-1])} or {causes[-1]}; {kept}"
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.skipping = False  # the optimizer step is over

    def state(self) -> dict:
        return {"args": {"counts": dict(self.counts)}, "attributes": {}}


def _named(samples: list[str]) -> str:
    if not samples:
        return "samples of unnamed sources"
    shown = ", ".join(samples[:_SHOWN_SAMPLES])
    more = f" and {len(samples) - _SHOWN_SAMPLES} more" if len(samples) > _SHOWN_SAMPLES else ""
    return f"samples {shown}{more}"
