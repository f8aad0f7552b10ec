"""One chat completion of `mgm serve`: a request checked against the limits, its images decoded in a slot, queued for
the batching engine, answered whole or streamed as server-sent events, and stopped when its client goes away."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from minigemini.engine import GenerationRequest, context_budget
from minigemini.generation import extract_image_prompt, request_image
from minigemini.serve.batching import Job, QueueFull
from minigemini.serve.images import RETURN_MEMORY_PIXELS, return_memory
from minigemini.serve.limits import PixelBudget
from minigemini.serve.schemas import APIError
from minigemini.serve.state import ServerState
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["ClientGone", "answer", "client_gone", "make_picture", "png_base64"]

logger = logging.getLogger("minigemini.serve")


class ClientGone(Exception):
    """The client disconnected before its answer was ready; the work done for it has been dropped."""


async def client_gone(receive) -> None:
    """Return once the client has disconnected.  Await it after the body was read: a request's next ASGI message is
    then ``http.disconnect``, which the server sends when the connection drops (or after the response)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def queue_full(reason: str) -> APIError:
    return APIError(429, f"the server is busy: {reason}; retry later", type="rate_limit_exceeded", code="queue_full")


def text_of(content, param: str, images: list | None) -> str:
    """Message content -> text; image parts are collected into ``images`` as (url, param) (None: not allowed)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        where = f"{param}.content[{index}]"
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url":
            if images is None:
                raise APIError(400, f"{where}: only user messages may carry images", param=where)
            url = part.image_url if isinstance(part.image_url, str) else getattr(part.image_url, "url", None)
            if not url:
                raise APIError(400, f"{where}: image_url.url is missing", param=where)
            images.append((url, f"{where}.image_url"))
        else:
            raise APIError(400, f"{where}: unsupported content part type {part.type!r} (use text or image_url)",
                           param=where)  # fmt: skip
    return "\n".join(t for t in texts if t)


async def prepare(server: ServerState, body, gone: asyncio.Future) -> GenerationRequest:
    """Check the request against the server's limits, cheapest checks first, then decode and encode it."""
    settings, engine, processor = server.settings, server.engine, server.processor
    if body.n != 1:
        raise APIError(400, "n must be 1 on this server", param="n")
    requested = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
    if requested > settings.max_tokens_limit:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise APIError(400, f"{param} is {requested}, above this server's limit of {settings.max_tokens_limit}",
                       param=param, code="max_tokens_too_large")  # fmt: skip
    if busy := engine.full():  # refuse before reading images and encoding: the answer is 429 anyway
        raise queue_full(busy)
    messages: list[dict[str, str]] = []
    sources: list = []  # (url, param) of every image, in order
    last_user = None
    for index, message in enumerate(body.messages):
        param = f"messages[{index}]"
        role = "system" if message.role == "developer" else message.role
        found: list | None = [] if role == "user" else None
        text = text_of(message.content, param, found)
        if found:
            if len(sources) + len(found) > settings.max_images:
                raise APIError(400, f"too many images: this server takes at most {settings.max_images} per request",
                               param=param, code="too_many_images")  # fmt: skip
            sources.extend(found)
            text = IMAGE_PLACEHOLDER * len(found) + text
        if role == "user":
            last_user = (len(messages), len(sources) - len(found or []), len(sources))
        messages.append({"role": role, "content": text})
    if last_user is None or messages[-1]["role"] != "user":
        raise APIError(400, "the last message must be a user message", param="messages")
    characters = sum(len(m["content"]) for m in messages)
    if server.max_characters is not None and characters > server.max_characters:
        raise APIError(400, f"the messages hold {characters:,} characters, more than the model's context of "
                       f"{engine.context_limit} tokens can take ({server.max_characters:,} characters at most); "
                       "shorten the conversation", param="messages", code="context_length_exceeded")  # fmt: skip
    if sources and (busy := engine.full(images=len(sources))):
        raise queue_full(busy)
    encoded, pixels = [], PixelBudget(settings.max_request_pixels, server.square)
    for url, where in sources:  # bytes and header sizes only: the budget refuses before anything is decoded
        raw = await server.fetcher.fetch(url, where)
        width, height = await run_in_threadpool(server.fetcher.size, raw, where)
        pixels.add(width, height, where)
        encoded.append((raw, where))
    position, first_image, end_image = last_user
    ocr_images = range(first_image, end_image) if body.ocr else range(0)

    def encode():
        pictures, ocr = [], []
        for index, (raw, where) in enumerate(encoded):
            picture = server.fetcher.decode(raw, where)
            if index in ocr_images:
                from minigemini.ocr import ocr_tokens

                ocr.extend(ocr_tokens(picture))
            pictures.append(server.shrink(picture) if server.shrink is not None else picture)
            del picture  # the full-size picture goes before the next one is decoded
        encoded.clear()
        if pixels.used >= RETURN_MEMORY_PIXELS:
            return_memory()  # the full-size pictures' pages, else resident at their peak until the process ends
        if ocr_images:
            from minigemini.ocr import ocr_hint

            hint = ocr_hint(ocr)
            if hint:
                messages[position]["content"] += "\n" + hint
        if body.generate_image:
            messages[position]["content"] = request_image(messages[position]["content"])
        prompt = processor.apply_chat_template(messages)
        return processor(text=prompt, images=pictures or None)

    try:
        if encoded:
            async with server.decode_slot():
                if gone.done():  # it waited for a slot and its client gave up meanwhile
                    raise ClientGone("before its images were decoded")
                inputs = await run_in_threadpool(encode)
        else:
            inputs = await run_in_threadpool(encode)
    except ImportError as error:
        if not body.ocr:
            raise
        raise APIError(400, f"OCR is not available on this server: {error}", param="ocr") from None
    except ValueError as error:
        raise APIError(400, str(error), param="messages") from None
    try:
        budget = context_budget(server.model, inputs["input_ids"].shape[1], requested)
    except ValueError as error:
        raise APIError(400, str(error), param="messages", code="context_length_exceeded") from None
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    temperature = settings.default_temperature if body.temperature is None else body.temperature
    return GenerationRequest(inputs, budget, temperature, body.top_p or 1.0, stop=stop[:4])


async def make_picture(server: ServerState, text: str, seed: int | None) -> list[dict[str, str]]:
    prompt = extract_image_prompt(text)
    if prompt is None or server.image_generator is None:
        return []
    picture = await run_in_threadpool(server.image_generator, prompt, seed=seed)
    return [{"b64_json": png_base64(picture), "prompt": prompt, "mime_type": "image/png"}]


def _resolve(future, value) -> None:
    if not future.done():
        future.set_result(value)


async def answer(server: ServerState, body, gone: asyncio.Future):
    """The chat completion of ``body``: a dict, or a streaming response when ``body.stream``."""
    generation = await prepare(server, body, gone)
    engine, model_name = server.engine, server.settings.model_name
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    events: asyncio.Queue = asyncio.Queue()
    if body.stream:
        generation.on_text = lambda piece: loop.call_soon_threadsafe(events.put_nowait, ("text", piece))
        on_done = lambda job: loop.call_soon_threadsafe(events.put_nowait, ("done", job))
    else:
        on_done = lambda job: loop.call_soon_threadsafe(_resolve, finished, job)
    try:
        job = engine.submit(generation, on_done=on_done)
    except QueueFull as error:
        raise queue_full(str(error)) from None
    created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"

    def usage(job: Job) -> dict[str, int]:
        prompt_tokens, completion_tokens = generation.prompt_tokens, generation.completion_tokens
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip

    def finish_reason() -> str:
        return "length" if generation.finish_reason == "length" else "stop"

    if not body.stream:
        # The framework only notices a disconnect while streaming, so watch for it here: a client that hangs up
        # stops its generation at the next token instead of leaving the model working for nobody.
        try:
            await asyncio.wait({finished, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            engine.cancel(job)
            raise
        if not finished.done():
            engine.cancel(job)
            raise ClientGone("while its answer was being generated; generation cancelled")
        if job.error is not None:
            raise APIError(500, f"generation failed: {job.error}", type="server_error")
        message: dict[str, Any] = {"role": "assistant", "content": generation.text}
        if body.generate_image:
            message["images"] = await make_picture(server, generation.text, body.seed)
        return {
            "id": completion_id, "object": "chat.completion", "created": created, "model": model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(), "logprobs": None}],
            "usage": usage(job),
        }  # fmt: skip

    def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}  # fmt: skip
        return f"data: {json.dumps(payload)}\n\n"

    async def stream():
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                kind, value = await events.get()
                if kind == "text":
                    yield chunk({"content": value})
                else:
                    break
            if job.error is not None:
                error = APIError(500, f"generation failed: {job.error}", type="server_error")
                yield f"data: {json.dumps(error.body())}\n\n"
            else:
                final: dict[str, Any] = {}
                if body.generate_image:
                    final["images"] = await make_picture(server, generation.text, body.seed)
                yield chunk(final, finish_reason())
                if body.stream_options is not None and body.stream_options.include_usage:
                    payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                               "model": model_name, "choices": [], "usage": usage(job)}  # fmt: skip
                    yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not job.done.is_set():  # the client went away: stop generating for it
                engine.cancel(job)
                logger.info("POST /v1/chat/completions: the client went away while its answer was streaming; "
                            "generation cancelled")  # fmt: skip

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


def png_base64(picture) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
