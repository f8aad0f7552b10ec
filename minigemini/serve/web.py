"""``mgm web``: a Gradio multimodal chat for a Mini-Gemini model.

Upload images with the message box, get answers streamed as they are generated; tick "Generate a picture" to
ask the paper's way (`` <GEN>``): the picture drawn from the answer's ``<h>prompt</h>`` is shown in the chat.
"OCR" appends the text found in the uploaded images.  Several browser sessions share one model: their requests
are batched by the same engine as ``mgm serve``.  The page uses local fonts only (no web font downloads).
"""

from __future__ import annotations

import queue
import tempfile
from collections.abc import Iterator
from typing import Any

from minigemini.engine import GenerationRequest, context_budget
from minigemini.generation import PROMPT_CLOSE, PROMPT_OPEN, extract_image_prompt, request_image
from minigemini.image_processing import ImageLoadError, load_image
from minigemini.inference import Conversation
from minigemini.serve.batching import BatchingEngine

__all__ = ["create_demo", "local_theme"]

TITLE = "Mini-Gemini"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def _parts(content: Any) -> Iterator[tuple[str, Any]]:
    """Gradio message content (str, file dict, component, or a list of these) -> ("text", str) / ("file", path)."""
    if content is None:
        return
    if isinstance(content, str):
        yield "text", content
    elif isinstance(content, (list, tuple)):
        for item in content:
            yield from _parts(item)
    elif isinstance(content, dict):
        kind = content.get("type")
        if kind == "text":
            yield "text", content.get("text", "")
        elif kind == "file":
            yield from _parts(content.get("file"))
        elif kind == "component":
            value = content.get("value")
            if isinstance(value, dict) and value.get("path"):
                yield "file", value["path"]
        elif content.get("path"):
            yield "file", content["path"]
    else:  # a FileData-like object or a component
        path = getattr(content, "path", None) or getattr(getattr(content, "value", None), "path", None)
        if isinstance(path, str):
            yield "file", path


def _show(text: str) -> str:
    """Escape the protocol tags for Gradio's Markdown (``\\<h>`` shows as ``<h>`` instead of vanishing as HTML)."""
    return text.replace(PROMPT_OPEN, "\\" + PROMPT_OPEN).replace(PROMPT_CLOSE, "\\" + PROMPT_CLOSE)


def _unshow(text: str) -> str:
    return text.replace("\\" + PROMPT_OPEN, PROMPT_OPEN).replace("\\" + PROMPT_CLOSE, PROMPT_CLOSE)


def _is_image(path: str) -> bool:
    return str(path).lower().endswith(_IMAGE_SUFFIXES)


def conversation_from_history(history: list[Any]) -> Conversation:
    """Rebuild the model-side conversation from Gradio's displayed history (images of user turns included)."""
    conversation = Conversation()
    pending_images: list[Any] = []
    for message in history:
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        texts, files = [], []
        for kind, value in _parts(content):
            (texts if kind == "text" else files).append(value)
        text = _unshow("\n".join(t for t in texts if t).strip())
        if role == "user":
            pending_images.extend(f for f in files if _is_image(f))
            if text:  # Gradio shows an upload and its text as separate user messages: merge them into one turn
                conversation.add_user(text, pending_images)
                pending_images = []
        elif role == "assistant" and text:
            if conversation.messages and conversation.messages[-1]["role"] == "assistant":
                conversation.messages[-1]["content"] += "\n" + text
            else:
                conversation.add_assistant(text)
    return conversation


def create_demo(engine: BatchingEngine, image_generator=None, max_new_tokens: int = 512, temperature: float = 0.2,
                description: str | None = None):  # fmt: skip
    """The Gradio app (a ``gr.ChatInterface``) around a started ``BatchingEngine``."""
    import gradio as gr

    model, processor = engine.model, engine.processor
    # Pictures go to Gradio as PNG files written once: handed a PIL image, Gradio re-encodes it into the same cache
    # path on every re-render (truncate, then write), and a browser fetching it meanwhile gets a short, broken file.
    # Gradio re-reads the file on re-renders, so it stays until the app is gone (then the folder is removed).
    pictures = tempfile.TemporaryDirectory(prefix="mgm-web-pictures-")

    def respond(message, history, generate_picture, use_ocr, max_tokens, temperature_value):
        text = (message.get("text") if isinstance(message, dict) else str(message or "")) or ""
        files = message.get("files", []) if isinstance(message, dict) else []
        paths = [f for _, f in _parts(files)]
        try:
            images = [load_image(path) for path in paths]
        except ImageLoadError as error:
            yield f"⚠️ {error}"
            return
        conversation = conversation_from_history(history)
        if use_ocr and images:
            from minigemini.ocr import add_ocr_hint

            try:
                text = add_ocr_hint(text, images)
            except ImportError as error:
                yield f"⚠️ OCR is not available: {error}"
                return
        if generate_picture:
            text = request_image(text)
        conversation.add_user(text, images)
        try:
            inputs = conversation.encode(processor)
            budget = context_budget(model, inputs["input_ids"].shape[1], int(max_tokens))
        except ValueError as error:
            yield f"⚠️ {error}"
            return
        pieces: queue.Queue = queue.Queue()
        request = GenerationRequest(inputs, budget, float(temperature_value), on_text=pieces.put)
        job = engine.submit(request, on_done=lambda job: pieces.put(None))
        answer = ""
        try:
            while True:
                piece = pieces.get()
                if piece is None:
                    break
                answer += piece
                yield _show(answer)
        finally:
            if not job.done.is_set():  # the browser stopped or left
                request.cancelled.set()
        if job.error is not None:
            yield f"{_show(answer)}\n\n⚠️ generation failed: {job.error}"
            return
        answer = _show(request.text) or "(empty answer)"
        yield answer
        if generate_picture:
            prompt = extract_image_prompt(request.text)
            if prompt is None:
                yield [answer, "(no <h>prompt</h> in the answer: no picture)"]
            elif image_generator is not None:
                with tempfile.NamedTemporaryFile(suffix=".png", dir=pictures.name, delete=False) as file:
                    image_generator(prompt).save(file, format="PNG")
                yield [answer, gr.Image(value=file.name, label=prompt)]

    chatbot = gr.Chatbot(label="Mini-Gemini", height=520, elem_id="mgm-chatbot")
    textbox = gr.MultimodalTextbox(
        file_types=["image"], file_count="multiple", placeholder="Ask about an image (attach it with the clip)",
        elem_id="mgm-input",
    )  # fmt: skip
    return gr.ChatInterface(
        respond,
        multimodal=True,
        chatbot=chatbot,
        textbox=textbox,
        title=TITLE,
        description=description,
        additional_inputs=[
            gr.Checkbox(label="Generate a picture (<GEN>)", value=False, elem_id="mgm-gen"),
            gr.Checkbox(label="OCR: add the text found in the images", value=False, elem_id="mgm-ocr"),
            gr.Slider(1, 4096, value=max_new_tokens, step=1, label="Max new tokens"),
            gr.Slider(0.0, 2.0, value=temperature, step=0.05, label="Temperature (0 = greedy)"),
        ],
        additional_inputs_accordion=gr.Accordion(label="Options", open=True),
        concurrency_limit=max(1, engine.max_batch_size),
        autofocus=False,
        fill_height=False,
    )


def local_theme():
    """A theme with system fonts only, so an offline browser never waits for web fonts."""
    import gradio as gr

    return gr.themes.Default(
        font=["DejaVu Sans", "ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["DejaVu Sans Mono", "ui-monospace", "monospace"],
    )
