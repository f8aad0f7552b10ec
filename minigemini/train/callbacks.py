"""Progress and logs: a progress bar with loss and tokens/s, and a JSONL file of every logged metric.

Both write on the main process only.  Tokens are the Trainer's ``num_input_tokens_seen`` (non-padding tokens, visual
tokens included, summed over all processes).
"""

from __future__ import annotations

import json
import os
import sys
import time

from transformers import TrainerCallback

__all__ = ["JsonlLogCallback", "ProgressBarCallback"]


class ProgressBarCallback(TrainerCallback):
    """A tqdm bar over optimizer steps showing loss, learning rate and tokens/s since the previous log."""

    def __init__(self, file=None):
        self.file = file
        self.bar = None
        self._last = None  # (time, tokens)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=state.max_steps,
            initial=state.global_step,
            desc="train",
            unit="step",
            file=self.file or sys.stderr,
            dynamic_ncols=True,
        )
        self._last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "loss" not in logs:
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        elapsed = now - self._last[0]
        rate = (tokens - self._last[1]) / elapsed if elapsed > 0 else 0.0
        self._last = (now, tokens)
        postfix = {"loss": f"{logs['loss']:.4f}", "tok/s": f"{rate:,.0f}"}
        if "learning_rate" in logs:
            postfix["lr"] = f"{logs['learning_rate']:.2e}"
        self.bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonlLogCallback(TrainerCallback):
    """Appends one JSON object per Trainer log to ``path``: step, epoch, time, tokens and the logged metrics."""

    def __init__(self, path: str):
        self.path = path
        self._start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.time()
        if state.is_world_process_zero:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            "time": round(time.time() - (self._start or time.time()), 3),
            "tokens": state.num_input_tokens_seen,
            **{k: v for k, v in logs.items() if isinstance(v, (int, float, str, bool)) or v is None},
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
