"""The one-call Python API: ``mgm.chat``, ``mgm.batch_chat`` (``batch_generate``) and ``Conversation``, the chat turn
that every front end (``mgm serve``, ``mgm web``, ``mgm chat``) builds the same way.

- ``chat(model, image, question)``: the one-liner (``model`` may be a directory; its processor is loaded with it).
- ``batch_chat(model, pairs)``: many (image, question) pairs, left-padded batches, a tqdm bar, answers in input order
  (``batch_generate``: the same, each answer with its finish reason and token count).
- ``Conversation``: multi-turn history with images attached to any user turn.  One turn is ``add_user`` (the images,
  the OCR hint, the `` <GEN>`` picture request), ``request`` (encoding and the context budget: a
  ``GenerationRequest`` for ``run_batch`` or the batching engine), then ``draw`` (the answer's ``<h>`` prompt and
  its picture).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from minigemini.engine import GenerationRequest, context_budget, run_batch
from minigemini.generation import extract_image_prompt, request_image
from minigemini.image_processing import load_image
from minigemini.loading import as_processor, model_and_processor
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["Conversation", "batch_chat", "batch_generate", "chat", "draw"]


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

    def add_user(
        self,
        text: str,
        images: Iterable[Any] = (),
        *,
        ocr: bool = False,
        generate_image: bool = False,
        load: Callable[[Any], Any] | None = None,
        keep: Callable[[Any], Any] | None = None,
    ) -> str:
        """Add a user turn with its images; returns the OCR hint added to it ("" when none).

        ``ocr``: a line with the text found in the images (``Reference OCR token: ...``) follows the text.
        ``generate_image``: the turn asks for a picture the paper's way (`` <GEN>`` last).  Images are taken one after
        another: ``load`` makes each a picture (default: stored as given, loaded by ``encode``), OCR reads it, and
        ``keep`` gives what is stored of it (the server shrinks it to the model's input before the next is decoded).
        Nothing is added when an image or the OCR fails (ValueError, or ImportError without the OCR extra).
        """
        pictures, tokens = [], []
        for image in images:
            picture = load(image) if load is not None else image
            if ocr:
                from minigemini.ocr import ocr_tokens

                tokens.extend(ocr_tokens(picture))
            pictures.append(keep(picture) if keep is not None else picture)
            del picture  # a full-size picture goes before the next one is loaded
        hint = ""
        if tokens:
            from minigemini.ocr import ocr_hint

            hint = ocr_hint(tokens)
        text = f"{text}\n{hint}" if hint else text
        text = request_image(text) if generate_image else text
        self.messages.append({"role": "user", "content": IMAGE_PLACEHOLDER * len(pictures) + text})
        self.images.extend(pictures)
        return hint

    def add_assistant(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})

    def add_system(self, text: str) -> None:
        """A system message at this point of the history (``system`` is the one that goes first)."""
        self.messages.append({"role": "system", "content": text})

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
        """The processor's inputs for the whole history; ``processor``: a processor or a directory holding one."""
        processor = as_processor(processor)
        prompt = processor.apply_chat_template(self.to_messages())
        return processor(text=prompt, images=[load_image(image) for image in self.images] or None)

    def request(
        self,
        model: Any,
        processor: Any,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        on_text: Callable[[str], None] | None = None,
    ) -> GenerationRequest:
        """The next answer's ``GenerationRequest``: the whole history encoded, ``max_new_tokens`` capped by the
        context.  Raises ValueError for an image or prompt the processor refuses, ``ContextTooLong`` (a ValueError)
        when the prompt leaves no room to answer."""
        inputs = self.encode(processor)
        budget = context_budget(model, inputs["input_ids"].shape[1], max_new_tokens)
        return GenerationRequest(inputs, budget, temperature, top_p, stop=list(stop), on_text=on_text)


def draw(answer: str, image_generator: Callable[..., Any] | None, **options: Any) -> tuple[str | None, Any]:
    """The picture an answer asks for: ``(prompt, picture)``, the ``<h>`` prompt by the caption rule
    (``generation.extract_image_prompt``) drawn by ``image_generator(prompt, **options)``; ``(None, None)`` without a
    prompt, ``(prompt, None)`` without a generator."""
    prompt = extract_image_prompt(answer)
    if prompt is None or image_generator is None:
        return prompt, None
    return prompt, image_generator(prompt, **options)


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
    quantization: str | None = None,
) -> str:
    """Answer one question about an image (or several, or none): ``chat("path/to/mgm", "cat.jpg", "What is it?")``.

    ``model``: a loaded ``MiniGeminiForConditionalGeneration`` or a directory (loaded once and cached, with its
    processor, on ``device``/``dtype``, its LLM quantised with ``quantization``: ``"nf4"``, ``"int8"``, ...);
    ``processor``: a processor, a directory holding one, or None (the model's).  ``image``: anything ``load_image``
    accepts, a list of them, or None.
    """
    model, processor = model_and_processor(model, processor, device, dtype, quantization)
    conversation = Conversation()
    conversation.add_user(question, _as_list(image))
    request = conversation.request(model, processor, max_new_tokens, temperature, top_p)
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
    quantization: str | None = None,
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
    model, processor = model_and_processor(model, processor, device, dtype, quantization)
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
                    request = conversation.request(model, processor, max_new_tokens, temperature, top_p)
                except ValueError as error:
                    if errors == "raise":
                        raise ValueError(f"pair {index}: {error}") from error
                    continue
                requests.append(request)
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
