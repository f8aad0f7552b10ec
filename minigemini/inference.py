"""Inference helpers shared by the Python API, ``mgm chat``, ``mgm serve`` and ``mgm web``.

- ``chat(model, image, question)``: the one-liner (``model`` may be a directory; its processor is loaded with it).
- ``batch_chat(model, pairs)``: many (image, question) pairs, left-padded batches, a tqdm bar, answers in input order
  (``batch_generate``: the same, each answer with its finish reason and token count).
- ``load_pretrained(path, device=, dtype=, load_in_4bit=, load_in_8bit=)``: model + processor with per-device
  defaults (bf16 on CUDA, fp16 on MPS; on a CPU bf16 where it has bf16 kernels, else fp32).
- ``Conversation``: multi-turn history with images attached to any user turn.
- ``GenerationRequest`` + ``run_batch``: the engine under all of these.  Each request carries one encoded sample
  and its own settings; ``run_batch`` left-pads several into one ``generate`` call and follows every row itself
  (a stopping criterion that sees each new token): it decodes incrementally, calls the request's ``on_text`` with
  every new piece of text (streaming works for batches), cuts at stop strings (held back until they cannot be the
  start of one), and stops each row at its own token budget, end-of-turn token or cancellation.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .image_processing import load_image
from .precision import cpu_inference_dtype
from .templates import IMAGE_PLACEHOLDER, stop_strings

__all__ = [
    "Conversation",
    "GenerationRequest",
    "batch_chat",
    "batch_generate",
    "chat",
    "context_budget",
    "default_dtype",
    "load_pretrained",
    "parse_dtype",
    "resolve_device",
    "run_batch",
]

# End-of-turn markers of common chat templates; used as stop tokens when the tokenizer's own template contains them.
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")
_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
    "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}  # fmt: skip


# ------------------------------------------------------------------------------------------------ loading


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available (this process's GPU under torchrun), else MPS, else CPU.

    Asking for an absent accelerator is an error."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available on this machine")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps was requested but MPS is not available on this machine")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fp16 where bf16 is unsupported), fp16 on MPS; on a CPU bf16 where it has bf16 matrix kernels
    (half the memory, faster), else fp32 (bf16 there runs a scalar fallback, many times slower)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return cpu_inference_dtype()


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"fp16"``/``"fp32"`` (and long names) -> torch dtype; ``None``/``"auto"`` -> None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return None
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of bf16, fp16, fp32 or auto") from None


def _quantization_config(load_in_4bit: bool, load_in_8bit: bool, device: torch.device, compute_dtype: torch.dtype):
    if load_in_4bit and load_in_8bit:
        raise ValueError("choose one of 4-bit and 8-bit loading, not both")
    bits = 4 if load_in_4bit else 8
    if device.type != "cuda":
        raise ValueError(f"{bits}-bit loading needs bitsandbytes on a CUDA device; this run uses {device.type}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError(f"{bits}-bit loading needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    # Only the LLM is quantised: the towers, mining and projector are small and precision-sensitive.
    skip = ["vision_tower", "vision_tower_aux", "mining", "mm_projector", "lm_head"]
    if load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


#: The name ``load_pretrained`` (and ``--model``) reads as the committed default model.
DEFAULT_MODEL_NAME = "default"


def load_pretrained(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    chat_template: str | None = None,
):
    """Load a saved Mini-Gemini and its processor; returns ``(model, processor)`` in eval mode on ``device``.

    ``path``: a directory saved by this package, ``"default"`` (the trained default model of
    ``default_model.py``), or a published MGM release checkpoint (converted on load by
    ``minigemini.convert``).  ``chat_template`` overrides the processor's (a release template name, e.g.
    ``"vicuna_v1"``).  4/8-bit loading quantises the LLM only and needs bitsandbytes and CUDA.
    """
    from .modeling import MiniGeminiForConditionalGeneration
    from .processing import PROCESSOR_CONFIG_NAME, MiniGeminiProcessor

    path = os.fspath(path)
    device = resolve_device(device)
    dtype = parse_dtype(dtype) or default_dtype(device)
    if path == DEFAULT_MODEL_NAME:
        from .default_model import load_default_model

        model, processor = load_default_model(dtype=dtype)
        return model.to(device).eval(), processor
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory not found: {path}")
    kwargs: dict[str, Any] = {"dtype": dtype}
    if load_in_4bit or load_in_8bit:
        kwargs["quantization_config"] = _quantization_config(load_in_4bit, load_in_8bit, device, dtype)
        kwargs["device_map"] = {"": device.index or 0}
    if not os.path.isfile(os.path.join(path, PROCESSOR_CONFIG_NAME)) and _is_release_checkpoint(path):
        # a published MGM checkpoint (YanweiLi/MGM-*): converted on load, processor and template derived from it
        from .convert import load_release_checkpoint

        model, processor = load_release_checkpoint(path, chat_template=chat_template, **kwargs)
        if processor is None:
            raise ValueError(f"{path} is a release checkpoint without tokenizer files; add them to the directory")
    else:
        overrides = {"chat_template": chat_template} if chat_template else {}
        processor = MiniGeminiProcessor.from_pretrained(path, **overrides)
        model = MiniGeminiForConditionalGeneration.from_pretrained(path, **kwargs)
    if not (load_in_4bit or load_in_8bit):
        model = model.to(device)
    return model.eval(), processor


def _is_release_checkpoint(path: str) -> bool:
    try:
        from .convert import is_release_checkpoint
    except ImportError:
        return False
    return is_release_checkpoint(path)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, device: str | None, dtype: str | None):
    return load_pretrained(path, device=device, dtype=dtype)


def _model_and_processor(model: Any, processor: Any, device: str | None = None, dtype: str | None = None):
    if isinstance(model, (str, os.PathLike)):
        loaded, loaded_processor = _load_cached(os.fspath(model), device, dtype)
        return loaded, processor or loaded_processor
    if processor is None:
        source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
        if not source or not os.path.isdir(source):
            raise ValueError("pass processor= (the model was not loaded from a directory that holds one)")
        from .processing import MiniGeminiProcessor

        processor = MiniGeminiProcessor.from_pretrained(source)
    return model, processor


# ------------------------------------------------------------------------------------------------ prompts


def _as_list(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


class Conversation:
    """A chat history in the processor's message format; user turns may carry images (placed first, as trained).

    Images are stored with the turn that brought them, in order, so ``encode`` passes every image of the history
    with the whole prompt each turn.
    """

    def __init__(self, system: str | None = None):
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.images: list[Any] = []

    def add_user(self, text: str, images: Iterable[Any] = ()) -> None:
        images = list(images)
        self.messages.append({"role": "user", "content": IMAGE_PLACEHOLDER * len(images) + text})
        self.images.extend(images)

    def add_assistant(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})

    def pop_user(self) -> None:
        """Undo the last ``add_user`` (e.g. when its turn failed), images included."""
        if self.messages and self.messages[-1]["role"] == "user":
            removed = self.messages.pop()["content"].count(IMAGE_PLACEHOLDER)
            if removed:
                del self.images[-removed:]

    def reset(self) -> None:
        self.messages.clear()
        self.images.clear()

    def to_messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + list(self.messages)

    def encode(self, processor):
        prompt = processor.apply_chat_template(self.to_messages())
        return processor(text=prompt, images=[load_image(image) for image in self.images] or None)


def context_limit(model) -> int | None:
    text_config = getattr(model.config, "text_config", model.config)
    return getattr(text_config, "max_position_embeddings", None)


def context_budget(model, prompt_length: int, max_new_tokens: int) -> int:
    """New tokens allowed after a ``prompt_length``-token prompt: ``max_new_tokens`` capped by the context.

    Raises ValueError when the prompt (visual tokens included) leaves no room to answer.
    """
    limit = context_limit(model)
    if limit is None:
        return max_new_tokens
    room = limit - prompt_length
    if room < 1:
        raise ValueError(
            f"the prompt is {prompt_length} tokens (visual tokens included) but the model's context is {limit} "
            f"tokens; shorten the conversation or use fewer images"
        )
    return min(max_new_tokens, room)


def stop_settings(processor) -> tuple[list[str], set[int]]:
    """(stop strings, stop token ids) for the processor's chat template and tokenizer."""
    tokenizer = processor.tokenizer
    strings = stop_strings(processor.chat_template) if processor.chat_template else []
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    jinja = getattr(tokenizer, "chat_template", None) or ""
    vocab = tokenizer.get_vocab()
    for token in _END_OF_TURN_TOKENS:
        if token in vocab and (token in jinja or token in strings):
            ids.add(vocab[token])
    for text in strings:  # a stop string that is a single special token stops at token level too
        if text in vocab and text in tokenizer.all_special_tokens:
            ids.add(vocab[text])
    return strings, ids


# ------------------------------------------------------------------------------------------------ generation


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


def _model_device_and_dtype(model) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.model.vision_tower.parameters())
    return model.get_input_embeddings().weight.device, parameter.dtype


def run_batch(model, processor, requests: Sequence[GenerationRequest]) -> Sequence[GenerationRequest]:
    """Generate for all ``requests`` in one left-padded ``generate`` call (they must share ``sampling_key``).

    Fills each request's ``text``, ``finish_reason`` and ``completion_tokens``; returns ``requests``.
    """
    if not requests:
        return requests
    keys = {r.sampling_key() for r in requests}
    if len(keys) > 1:
        raise ValueError(f"requests in one batch must share sampling settings, got {sorted(keys)}")
    tokenizer = processor.tokenizer
    template_stops, stop_ids = stop_settings(processor)
    batch = collate(requests, tokenizer.pad_token_id)
    longest = batch["input_ids"].shape[1]
    max_new_tokens = context_budget(model, longest, max(r.max_new_tokens for r in requests))
    rows = [_Row(r, tokenizer, list(template_stops) + list(r.stop), stop_ids) for r in requests]
    device, dtype = _model_device_and_dtype(model)
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


# ------------------------------------------------------------------------------------------------ one-liners


def chat(
    model: Any,
    image: Any = None,
    question: str = "",
    processor: Any = None,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    device: str | None = None,
    dtype: str | None = None,
) -> str:
    """Answer one question about an image (or several, or none): ``chat("path/to/mgm", "cat.jpg", "What is it?")``.

    ``model``: a loaded ``MiniGeminiForConditionalGeneration`` or a directory (loaded once and cached, with its
    processor, on ``device``/``dtype``).  ``image``: anything ``load_image`` accepts, a list of them, or None.
    """
    model, processor = _model_and_processor(model, processor, device, dtype)
    conversation = Conversation()
    conversation.add_user(question, _as_list(image))
    inputs = conversation.encode(processor)
    request = GenerationRequest(
        inputs=inputs,
        max_new_tokens=context_budget(model, inputs["input_ids"].shape[1], max_new_tokens),
        temperature=temperature,
        top_p=top_p,
    )
    run_batch(model, processor, [request])
    return request.text


def batch_generate(
    model: Any,
    pairs: Iterable[tuple[Any, str]],
    processor: Any = None,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    progress: bool = True,
    errors: str = "raise",
    device: str | None = None,
    dtype: str | None = None,
) -> list[GenerationRequest | None]:
    """Generate for many ``(image, question)`` pairs (image: one, a list, or None), ``batch_size`` at a time.

    Pairs are grouped by similar length (less padding) and answered in left-padded batches; the answers come back
    in input order.  Images are loaded batch by batch.  ``errors="raise"`` stops at the first unreadable image or
    over-long prompt (naming the pair); ``errors="skip"`` answers None for such pairs instead.  Returns the
    finished requests (``text``, ``finish_reason``, ``completion_tokens``), in input order.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    model, processor = _model_and_processor(model, processor, device, dtype)
    pairs = list(pairs)
    answers: list[GenerationRequest | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: (len(_as_list(pairs[i][0])), len(pairs[i][1])))
    with tqdm(total=len(pairs), desc="mgm", unit="sample", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            requests, indices = [], []
            for index in order[start : start + batch_size]:
                image, question = pairs[index]
                try:
                    conversation = Conversation()
                    conversation.add_user(question, _as_list(image))
                    inputs = conversation.encode(processor)
                    budget = context_budget(model, inputs["input_ids"].shape[1], max_new_tokens)
                except ValueError as error:
                    if errors == "raise":
                        raise ValueError(f"pair {index}: {error}") from error
                    continue
                requests.append(GenerationRequest(inputs, budget, temperature, top_p))
                indices.append(index)
            if requests:
                run_batch(model, processor, requests)
                for index, request in zip(indices, requests):
                    answers[index] = request
            bar.update(len(order[start : start + batch_size]))
    return answers


def batch_chat(model: Any, pairs: Iterable[tuple[Any, str]], processor: Any = None, **options: Any) -> list[str | None]:
    """``batch_generate``'s answers as text (None for a pair skipped with ``errors="skip"``)."""
    return [None if request is None else request.text for request in batch_generate(model, pairs, processor, **options)]
