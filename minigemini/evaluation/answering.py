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

__all__ = ["generate_answers", "load_model_and_processor"]


def _as_list(images: Any) -> list:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def _stops(processor) -> list[str]:
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
    prompts, images = [], []
    for sample_images, question in batch:
        sample_images = _as_list(sample_images)
        text = IMAGE_PLACEHOLDER * len(sample_images) + str(question).replace(IMAGE_PLACEHOLDER, "").strip()
        prompts.append(processor.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))
        images.append(sample_images)
    inputs = processor(text=prompts, images=images if any(images) else None, padding_side="left", return_tensors="pt")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    inputs = {
        key: value.to(model.device, dtype=dtype if value.is_floating_point() else None) for key, value in inputs.items()
    }
    stops = _stops(processor) + [s for s in (stop or []) if s]
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
    answers = []
    for text in processor.batch_decode(new_tokens, skip_special_tokens=True):
        for s in stops:
            position = text.find(s)
            if position >= 0:
                text = text[:position]
        answers.append(text.strip())
    return answers


def load_model_and_processor(
    path: str, device: str = "auto", dtype: str = "auto", chat_template: str | None = None, quantize: str | None = None
):
    """The model and its processor on one device, in eval mode (`inference.load_pretrained`: bf16 on CUDA, fp16 on
    MPS, on a CPU bf16 with bf16 kernels else fp32, unless `dtype` says otherwise; release checkpoints converted on
    load; the LLM quantised with the scheme ``quantize``)."""
    from minigemini.loading import load_pretrained

    return load_pretrained(path, device=device, dtype=dtype, chat_template=chat_template, quantization=quantize)
