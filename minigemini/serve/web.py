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

from minigemini.generation import PROMPT_CLOSE, PROMPT_OPEN
from minigemini.image_processing import load_image
from minigemini.inference import Conversation, draw
from minigemini.serve.batching import BatchingEngine

__all__ = ["WebChat", "create_demo", "local_theme"]

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


class WebChat:
    """The answers of ``mgm web``: each message is one chat turn (``inference.Conversation``) on the batching engine,
    streamed as it is generated, then the picture its ``<h>prompt</h>`` asks for."""

    def __init__(self, engine: BatchingEngine, image_generator=None):
        self.engine, self.image_generator = engine, image_generator
        # Pictures go to Gradio as PNG files written once: handed a PIL image, Gradio re-encodes it into the same
        # cache path on every re-render (truncate, then write), and a browser fetching it meanwhile gets a short,
        # broken file.  Gradio re-reads the file on re-renders, so it stays until the app is gone (then the folder
        # is removed).
        self.pictures = tempfile.TemporaryDirectory(prefix="mgm-web-pictures-")

    def request(self, message, history, generate_picture: bool, use_ocr: bool, max_tokens, temperature):
        """The turn's ``GenerationRequest``, its text streamed into a queue (None once it is done)."""
        text = (message.get("text") if isinstance(message, dict) else str(message or "")) or ""
        files = message.get("files", []) if isinstance(message, dict) else []
        images = [load_image(path) for _, path in _parts(files)]
        conversation = conversation_from_history(history)
        conversation.add_user(text, images, ocr=use_ocr, generate_image=generate_picture)
        pieces: queue.Queue = queue.Queue()
        request = conversation.request(
            self.engine.model, self.engine.processor, int(max_tokens), float(temperature), on_text=pieces.put
        )
        return request, pieces

    def respond(self, message, history, generate_picture, use_ocr, max_tokens, temperature):
        """Gradio's ``ChatInterface`` function: the answer so far, then the picture (a warning line for a bad turn)."""
        try:
            request, pieces = self.request(message, history, generate_picture, use_ocr, max_tokens, temperature)
        except ImportError as error:
            yield f"⚠️ OCR is not available: {error}"
            return
        except ValueError as error:  # an unreadable image, a prompt too long for the context
            yield f"⚠️ {error}"
            return
        job = self.engine.submit(request, on_done=lambda job: pieces.put(None))
        answer = ""
        try:
            while (piece := pieces.get()) is not None:
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
        shown = self.picture(request.text) if generate_picture else None
        if shown is not None:
            yield [answer, shown]

    def picture(self, answer: str):
        """What the chat shows for the answer's picture: an image, a line saying there is none, or None (no backend)."""
        import gradio as gr

        prompt, picture = draw(answer, self.image_generator)
        if prompt is None:
            return "(no <h>prompt</h> in the answer: no picture)"
        if picture is None:
            return None
        with tempfile.NamedTemporaryFile(suffix=".png", dir=self.pictures.name, delete=False) as file:
            picture.save(file, format="PNG")
        return gr.Image(value=file.name, label=prompt)


def create_demo(
    engine: BatchingEngine,
    image_generator=None,
    max_new_tokens: int = 512,
    temperature: float = 0.2,
    description: str | None = None,
):
    """The Gradio app (a ``gr.ChatInterface``) around a started ``BatchingEngine``."""
    import gradio as gr

    chatbot = gr.Chatbot(label="Mini-Gemini", height=520, elem_id="mgm-chatbot")
    textbox = gr.MultimodalTextbox(
        file_types=["image"],
        file_count="multiple",
        placeholder="Ask about an image (attach it with the clip)",
        elem_id="mgm-input",
    )
    return gr.ChatInterface(
        WebChat(engine, image_generator).respond,
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
