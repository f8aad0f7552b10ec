"""The streaming batch engine under ``mgm.chat``, ``mgm serve``, ``mgm chat`` and ``mgm web``.

Each ``GenerationRequest`` carries one encoded sample and its own settings; ``run_batch`` left-pads several into one
``generate`` call and follows every row itself (a stopping criterion that sees each new token): it decodes
incrementally, calls the request's ``on_text`` with every new piece of text (streaming works for batches), cuts at
stop strings (held back until they cannot be the start of one), and stops each row at its own token budget,
end-of-turn token or cancellation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from minigemini.loading import model_and_processor, model_device_and_dtype

__all__ = ["ContextTooLong", "GenerationRequest", "collate", "context_budget", "context_limit", "run_batch"]


def context_limit(model) -> int | None:
    text_config = getattr(model.config, "text_config", model.config)
    return getattr(text_config, "max_position_embeddings", None)


class ContextTooLong(ValueError):
    """The prompt (visual tokens included) leaves no room in the model's context to answer."""


def context_budget(model, prompt_length: int, max_new_tokens: int) -> int:
    """New tokens allowed after a ``prompt_length``-token prompt: ``max_new_tokens`` capped by the context.

    Raises ContextTooLong (a ValueError) when the prompt (visual tokens included) leaves no room to answer.
    """
    limit = context_limit(model)
    if limit is None:
        return max_new_tokens
    room = limit - prompt_length
    if room < 1:
        raise ContextTooLong(
            f"the prompt is {prompt_length} tokens (visual tokens included) but the model's context is {limit} "
            f"tokens; shorten the conversation or use fewer images"
        )
    return min(max_new_tokens, room)


@dataclass(eq=False)
class GenerationRequest:
    """One sample to generate for.  ``inputs``: the processor's output for this sample alone (batch of one).

    After ``run_batch``: ``text`` (stripped answer), ``finish_reason`` (``"stop"``, ``"length"`` or
    ``"cancelled"``) and ``completion_tokens``.  ``on_text(piece)`` is called with each new piece of text as it is
    decoded, from the generating thread.  Set ``cancelled`` to stop this row early.
    """

    inputs: Mapping[str, torch.Tensor]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    on_text: Callable[[str], None] | None = None
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def prompt_tokens(self) -> int:
        return int(self.inputs["attention_mask"].sum())

    @property
    def prompt_length(self) -> int:
        return int(self.inputs["input_ids"].shape[-1])

    @property
    def do_sample(self) -> bool:
        return self.temperature > 1e-5

    def sampling_key(self) -> tuple:
        """Requests with equal keys can share one ``generate`` call."""
        return (True, round(self.temperature, 6), round(self.top_p, 6)) if self.do_sample else (False,)


class _Row:
    """Incremental decoding of one generated sequence with stop strings held back until resolved."""

    def __init__(self, request: GenerationRequest, tokenizer, stops: Sequence[str], stop_ids: set[int]):
        self.request = request
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.stop_ids = stop_ids
        self.tokens: list[int] = []
        self.consumed = 0  # characters of the decoded text already handled (emitted or dropped)
        self.pieces: list[str] = []
        self.done = False

    def _emit(self, piece: str) -> None:
        if not self.pieces:
            piece = piece.lstrip()
        if piece:
            self.pieces.append(piece)
            if self.request.on_text is not None:
                self.request.on_text(piece)

    def _holdback(self, text: str) -> int:
        longest = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:length]):
                    longest = length
                    break
        return longest

    def finish(self, reason: str) -> None:
        self.done = True
        self.request.finish_reason = reason
        self.request.completion_tokens = len(self.tokens)
        self.request.text = "".join(self.pieces).strip()

    def push(self, token: int) -> None:
        if self.request.cancelled.is_set():
            self.finish("cancelled")
            return
        if token in self.stop_ids:
            self.finish("stop")
            return
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        stable = text.rstrip("\ufffd")  # an incomplete multi-byte character: wait for the next token
        hits = [i for i in (stable.find(s, max(0, self.consumed - len(s) + 1)) for s in self.stops) if i >= 0]
        if hits:
            cut = max(min(hits), self.consumed)
            self._emit(stable[self.consumed : cut])
            self.consumed = cut
            self.finish("stop")
            return
        if len(self.tokens) >= self.request.max_new_tokens:
            self._emit(text[self.consumed :])
            self.consumed = len(text)
            self.finish("length")
            return
        end = len(stable) - self._holdback(stable)
        if end > self.consumed:
            self._emit(stable[self.consumed : end])
            self.consumed = end


class _RowTracker(StoppingCriteria):
    """Sees every new token of every row (a stopping criterion is called once per step, before streamers)."""

    def __init__(self, rows: list[_Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        newest = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, newest):
            if not row.done:
                row.push(token)
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)


def collate(requests: Sequence[GenerationRequest], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad single-sample encodings into one batch; images are concatenated in request order."""
    longest = max(r.prompt_length for r in requests)
    input_ids, attention_mask, pixel_values, high_res = [], [], [], []
    for request in requests:
        ids = request.inputs["input_ids"].reshape(-1)
        mask = request.inputs["attention_mask"].reshape(-1)
        fill = longest - ids.shape[0]
        input_ids.append(torch.cat([ids.new_full((fill,), pad_token_id), ids]))
        attention_mask.append(torch.cat([mask.new_zeros(fill), mask]))
        if request.inputs.get("pixel_values") is not None:
            pixel_values.append(request.inputs["pixel_values"])
            high_res.append(request.inputs["high_res_pixel_values"])
    batch = {"input_ids": torch.stack(input_ids), "attention_mask": torch.stack(attention_mask)}
    if pixel_values:
        batch["pixel_values"] = torch.cat(pixel_values)
        batch["high_res_pixel_values"] = torch.cat(high_res)
    return batch


def run_batch(model, processor, requests: Sequence[GenerationRequest]) -> Sequence[GenerationRequest]:
    """Generate for all ``requests`` in one left-padded ``generate`` call (they must share ``sampling_key``).

    Fills each request's ``text``, ``finish_reason`` and ``completion_tokens``; returns ``requests``.  ``model`` and
    ``processor``: loaded ones or directories (``loading.model_and_processor``).
    """
    if not requests:
        return requests
    model, processor = model_and_processor(model, processor)
    keys = {r.sampling_key() for r in requests}
    if len(keys) > 1:
        raise ValueError(f"requests in one batch must share sampling settings, got {sorted(keys)}")
    tokenizer = processor.tokenizer
    template_stops, stop_ids = processor.stop_settings()
    batch = collate(requests, tokenizer.pad_token_id)
    longest = batch["input_ids"].shape[1]
    max_new_tokens = context_budget(model, longest, max(r.max_new_tokens for r in requests))
    rows = [_Row(r, tokenizer, list(template_stops) + list(r.stop), stop_ids) for r in requests]
    device, dtype = model_device_and_dtype(model)
    batch = {k: v.to(device, dtype) if k.endswith("pixel_values") else v.to(device) for k, v in batch.items()}
    first = requests[0]
    sampling: dict[str, Any] = {"do_sample": first.do_sample}
    if first.do_sample:
        sampling.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
    else:
        sampling.update(temperature=None, top_p=None, top_k=None)
    tracker = _RowTracker(rows)
    with torch.inference_mode():
        model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([tracker]),
            **sampling,
        )
    for row in rows:
        if not row.done:
            if row.request.cancelled.is_set():
                row.finish("cancelled")
                continue
            row._emit(row.tokenizer.decode(row.tokens, skip_special_tokens=True)[row.consumed :])
            row.finish("length")
    return requests
