"""The one generation call that the benchmark runner and the lmms-eval adapter share.

``generate_answers(model, processor, batch)`` renders each ``(images, question)`` with the processor's chat
template (images first, each followed by a newline, as the release trains), pads the batch on the left,
decodes greedily and returns the new text of each sample, cut at the template's stop strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from minigemini.loading import model_and_processor
from minigemini.templates import IMAGE_PLACEHOLDER, stop_strings

__all__ = ["cut_at_stops", "generate_answers", "load_model_and_processor", "render_prompt", "stop_strings_of"]


def _as_list(images: Any) -> list:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def stop_strings_of(processor) -> list[str]:
    """The strings that end an answer of this processor's chat template (its end-of-sequence token otherwise)."""
    template = getattr(processor, "template_name", None)
    if template:
        return [s for s in stop_strings(template) if s]
    eos = getattr(processor.tokenizer, "eos_token", None)
    return [eos] if eos else []


def _eos_ids(processor, stops: list[str]) -> list[int]:
    tokenizer = processor.tokenizer
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    unk = tokenizer.unk_token_id
    for stop in stops:
        token_ids = tokenizer.encode(stop, add_special_tokens=False)
        if len(token_ids) == 1 and token_ids[0] != unk and token_ids[0] not in ids:
            ids.append(token_ids[0])
    return ids


@torch.inference_mode()
def generate_answers(
    model,
    processor,
    batch: Sequence[tuple[Any, str]],
    max_new_tokens: int = 128,
    stop: Sequence[str] | None = None,
) -> list[str]:
    """Greedy answers for a batch of ``(images, question)`` pairs.

    images: None, one image or a list (anything ``load_image`` takes); the question must not contain
    ``<image>`` itself.  ``stop``: extra strings that end an answer (lmms-eval's ``until``).  ``model`` and
    ``processor``: loaded ones or directories (``loading.model_and_processor``).
    """
    if not batch:
        return []
    model, processor = model_and_processor(model, processor)
    images = [_as_list(sample_images) for sample_images, _ in batch]
    prompts = [render_prompt(processor, len(pictures), question) for pictures, (_, question) in zip(images, batch)]
    inputs = processor(text=prompts, images=images if any(images) else None, padding_side="left", return_tensors="pt")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    inputs = {
        key: value.to(model.device, dtype=dtype if value.is_floating_point() else None) for key, value in inputs.items()
    }
    stops = stop_strings_of(processor) + [s for s in (stop or []) if s]
    tokenizer = processor.tokenizer
    output = model.generate(
        **inputs,
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=_eos_ids(processor, stops) or None,
    )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [cut_at_stops(text, stops) for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def render_prompt(processor, images: int, question: str) -> str:
    """The chat-template text of one question with ``images`` images (each ``<image>`` first, as the release
    trains): what every local engine tokenises."""
    text = IMAGE_PLACEHOLDER * images + str(question).replace(IMAGE_PLACEHOLDER, "").strip()
    return processor.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The answer: ``text`` up to the first of ``stops``, stripped."""
    for s in stops:
        position = text.find(s)
        if position >= 0:
            text = text[:position]
    return text.strip()


def load_model_and_processor(
    path: str, device: str = "auto", dtype: str = "auto", chat_template: str | None = None, quantize: str | None = None
):
    """The model and its processor on one device, in eval mode (`inference.load_pretrained`: bf16 on CUDA, fp16 on
    MPS, on a CPU bf16 with bf16 kernels else fp32, unless `dtype` says otherwise; release checkpoints converted on
    load; the LLM quantised with the scheme ``quantize``)."""
    from minigemini.loading import load_pretrained

    return load_pretrained(path, device=device, dtype=dtype, chat_template=chat_template, quantization=quantize)
