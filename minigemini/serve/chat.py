"""One chat completion of `mgm serve` (vLLM's ``serving_chat.py``): a request checked against the limits, its images
fetched and measured, then decoded in a slot into the library's chat turn (``inference.Conversation``), queued for the
batching engine, answered whole (``Completion.reply``) or streamed as server-sent events (``Completion.stream``), and
stopped when its client goes away."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from minigemini.engine import ContextTooLong, GenerationRequest
from minigemini.inference import Conversation, draw
from minigemini.serve.batching import Job, QueueFull
from minigemini.serve.errors import APIError
from minigemini.serve.images import RETURN_MEMORY_PIXELS, return_memory
from minigemini.serve.limits import PixelBudget
from minigemini.serve.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    Picture,
    Usage,
    sse,
)
from minigemini.serve.state import ServerState
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["ClientGone", "Completion", "answer", "client_gone", "make_picture", "png_base64", "prepare"]

logger = logging.getLogger("minigemini.serve")


class ClientGone(Exception):
    """The client disconnected before its answer was ready; the work done for it has been dropped."""


async def client_gone(receive) -> None:
    """Return once the client has disconnected.  Await it after the body was read: a request's next ASGI message is
    then ``http.disconnect``, which the server sends when the connection drops (or after the response)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def queue_full(error: QueueFull) -> APIError:
    return APIError(429, f"the server is busy: {error}; retry later", type="rate_limit_exceeded", code="queue_full")


def generation_failed(error: BaseException) -> APIError:
    return APIError(500, f"generation failed: {error}", type="server_error")


# ----------------------------------------------------------------------------------------------------- the request


@dataclass
class MessageParts:
    """One message of the request: its role, its text, and its images (``image_url`` and param, then their bytes)."""

    role: str
    text: str
    images: list[tuple] = field(default_factory=list)

    @property
    def characters(self) -> int:
        return len(IMAGE_PLACEHOLDER) * len(self.images) + len(self.text)


def read_message(message, param: str) -> MessageParts:
    """A request message -> ``MessageParts``; image parts are allowed in user messages only."""
    role = "system" if message.role == "developer" else message.role
    parts = MessageParts(role, "")
    if message.content is None or isinstance(message.content, str):
        parts.text = message.content or ""
        return parts
    texts = []
    for index, part in enumerate(message.content):
        where = f"{param}.content[{index}]"
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type != "image_url":
            raise APIError(
                400, f"{where}: unsupported content part type {part.type!r} (use text or image_url)", param=where
            )
        elif role != "user":
            raise APIError(400, f"{where}: only user messages may carry images", param=where)
        elif not part.url:
            raise APIError(400, f"{where}: image_url.url is missing", param=where)
        else:
            parts.images.append((part.url, f"{where}.image_url"))
    parts.text = "\n".join(t for t in texts if t)
    return parts


def read_messages(server: ServerState, body: ChatCompletionRequest) -> list[MessageParts]:
    """The messages, within the server's image and character limits; the last one must be the user's."""
    messages, images = [], 0
    for index, message in enumerate(body.messages):
        parts = read_message(message, f"messages[{index}]")
        images += len(parts.images)
        if images > server.settings.max_images:
            raise APIError(
                400,
                f"too many images: this server takes at most {server.settings.max_images} per request",
                param=f"messages[{index}]",
                code="too_many_images",
            )
        messages.append(parts)
    if messages[-1].role != "user":
        raise APIError(400, "the last message must be a user message", param="messages")
    characters = sum(parts.characters for parts in messages)
    if server.max_characters is not None and characters > server.max_characters:
        raise APIError(
            400,
            f"the messages hold {characters:,} characters, more than the model's context of "
            f"{server.engine.context_limit} tokens can take ({server.max_characters:,} characters at most); "
            "shorten the conversation",
            param="messages",
            code="context_length_exceeded",
        )
    return messages


def requested_tokens(server: ServerState, body: ChatCompletionRequest) -> int:
    """The answer's ``max_tokens``, within the server's limit."""
    settings = server.settings
    requested = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
    if requested > settings.max_tokens_limit:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise APIError(
            400,
            f"{param} is {requested}, above this server's limit of {settings.max_tokens_limit}",
            param=param,
            code="max_tokens_too_large",
        )
    return requested


def check_queue(server: ServerState, images: int = 0) -> None:
    """429 now when the engine would refuse the request: before its images are read and encoded."""
    try:
        server.engine.check(images)
    except QueueFull as error:
        raise queue_full(error) from None


async def fetch_images(server: ServerState, messages: list[MessageParts]) -> PixelBudget:
    """Every image's bytes, in place of its URL; sizes from the headers only, refused before anything is decoded."""
    pixels = PixelBudget(server.settings.max_request_pixels, server.square)
    for parts in messages:
        for index, (url, where) in enumerate(parts.images):
            raw = await server.fetcher.fetch(url, where)
            width, height = await run_in_threadpool(server.fetcher.size, raw, where)
            pixels.add(width, height, where)
            parts.images[index] = (raw, where)
    return pixels


def encode(
    server: ServerState, body: ChatCompletionRequest, messages: list[MessageParts], pixels: PixelBudget, max_tokens: int
) -> GenerationRequest:
    """The chat turn (run in a thread): each image decoded, read by OCR (the last message's, with ``ocr``) and shrunk
    before the next; then the ``GenerationRequest``."""
    conversation = Conversation()
    decode = lambda image: server.fetcher.decode(*image)
    for position, parts in enumerate(messages):
        if parts.role == "user":
            last = position == len(messages) - 1
            conversation.add_user(
                parts.text,
                parts.images,
                ocr=body.ocr and last,
                load=decode,
                keep=server.shrink,
                generate_image=body.generate_image and last,
            )
            parts.images.clear()  # the encoded bytes go as soon as they are decoded
        elif parts.role == "assistant":
            conversation.add_assistant(parts.text)
        else:
            conversation.add_system(parts.text)
    if pixels.used >= RETURN_MEMORY_PIXELS:
        return_memory()  # the full-size pictures' pages, else resident at their peak until the process ends
    temperature = server.settings.default_temperature if body.temperature is None else body.temperature
    return conversation.request(
        server.model, server.processor, max_tokens, temperature, body.top_p or 1.0, stop=body.stops
    )


async def prepare(server: ServerState, body: ChatCompletionRequest, gone: asyncio.Future) -> GenerationRequest:
    """Check the request against the server's limits, cheapest checks first, then decode and encode it."""
    if body.n != 1:
        raise APIError(400, "n must be 1 on this server", param="n")
    max_tokens = requested_tokens(server, body)
    check_queue(server)
    messages = read_messages(server, body)
    images = sum(len(parts.images) for parts in messages)
    if images:
        check_queue(server, images)
    pixels = await fetch_images(server, messages)
    try:
        if not images:
            return await run_in_threadpool(encode, server, body, messages, pixels, max_tokens)
        async with server.decode_slot():
            if gone.done():  # it waited for a slot and its client gave up meanwhile
                raise ClientGone("before its images were decoded")
            return await run_in_threadpool(encode, server, body, messages, pixels, max_tokens)
    except ImportError as error:
        if not body.ocr:
            raise
        raise APIError(400, f"OCR is not available on this server: {error}", param="ocr") from None
    except ContextTooLong as error:
        raise APIError(400, str(error), param="messages", code="context_length_exceeded") from None
    except ValueError as error:
        raise APIError(400, str(error), param="messages") from None


# ----------------------------------------------------------------------------------------------------- the answer


def png_base64(picture) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def make_picture(server: ServerState, text: str, seed: int | None) -> list[Picture]:
    """The picture drawn from the answer's ``<h>`` prompt (none without a prompt or a text-to-image backend)."""
    prompt, picture = await run_in_threadpool(draw, text, server.image_generator, seed=seed)
    return [] if picture is None else [Picture(b64_json=png_base64(picture), prompt=prompt)]


class Completion:
    """The answer to one prepared request on the batching engine: whole (``reply``) or streamed (``stream``)."""

    def __init__(self, server: ServerState, body: ChatCompletionRequest, generation: GenerationRequest):
        self.server, self.body, self.generation = server, body, generation
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        self.loop = asyncio.get_running_loop()

    def submit(self, on_done) -> Job:
        try:
            return self.server.engine.submit(self.generation, on_done=on_done)
        except QueueFull as error:
            raise queue_full(error) from None

    @property
    def finish_reason(self) -> str:
        return "length" if self.generation.finish_reason == "length" else "stop"

    def usage(self) -> Usage:
        prompt, completion = self.generation.prompt_tokens, self.generation.completion_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    async def pictures(self) -> list[Picture] | None:
        if not self.body.generate_image:
            return None
        return await make_picture(self.server, self.generation.text, self.body.seed)

    async def reply(self, gone: asyncio.Future) -> ChatCompletionResponse:
        """The whole answer.  The framework only notices a disconnect while streaming, so ``gone`` is watched here: a
        client that hangs up stops its generation at the next token instead of leaving the model working for nobody."""
        finished = self.loop.create_future()
        job = self.submit(lambda job: self.loop.call_soon_threadsafe(_resolve, finished, job))
        try:
            await asyncio.wait({finished, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.server.engine.cancel(job)
            raise
        if not finished.done():
            self.server.engine.cancel(job)
            raise ClientGone("while its answer was being generated; generation cancelled")
        if job.error is not None:
            raise generation_failed(job.error)
        message = ChatMessage(content=self.generation.text, images=await self.pictures())
        choice = Choice(message=message, finish_reason=self.finish_reason)
        return ChatCompletionResponse(
            id=self.id,
            created=self.created,
            model=self.server.settings.model_name,
            choices=[choice],
            usage=self.usage(),
        )

    def stream(self) -> StreamingResponse:
        """The answer as server-sent events; the request is queued (or refused, 429) before the response starts."""
        pieces: asyncio.Queue = asyncio.Queue()
        put = lambda piece: self.loop.call_soon_threadsafe(pieces.put_nowait, piece)
        self.generation.on_text = put
        job = self.submit(lambda job: put(None))
        return StreamingResponse(
            self.events(job, pieces),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def chunk(self, delta: Delta, finish_reason: str | None = None) -> str:
        choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
        return sse(self._chunk(choices=[choice]))

    def _chunk(self, **fields) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.server.settings.model_name, **fields)

    async def events(self, job: Job, pieces: asyncio.Queue) -> AsyncIterator[str]:
        try:
            yield self.chunk(Delta(role="assistant", content=""))
            while (piece := await pieces.get()) is not None:
                yield self.chunk(Delta(content=piece))
            if job.error is not None:
                yield generation_failed(job.error).sse()
            else:
                yield self.chunk(Delta(images=await self.pictures()), self.finish_reason)
                if self.body.include_usage:
                    yield sse(self._chunk(choices=[], usage=self.usage()))
            yield "data: [DONE]\n\n"
        finally:
            if not job.done.is_set():  # the client went away: stop generating for it
                self.server.engine.cancel(job)
                logger.info(
                    "POST /v1/chat/completions: the client went away while its answer was streaming; "
                    "generation cancelled"
                )


def _resolve(future, value) -> None:
    if not future.done():
        future.set_result(value)


async def answer(server: ServerState, body: ChatCompletionRequest, gone: asyncio.Future):
    """The chat completion of ``body``: a ``ChatCompletionResponse``, or a streaming response when ``body.stream``."""
    completion = Completion(server, body, await prepare(server, body, gone))
    return completion.stream() if body.stream else await completion.reply(gone)
