"""The routes of `mgm serve`, module-level handlers on one ``APIRouter``; what they share is ``app.state.server`` (a
``ServerState``), so that a route can be read, tested and changed alone.

The handlers read request bodies themselves (``read_json``) to answer every malformed body OpenAI's way.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from minigemini.serve.chat import answer, client_gone, png_base64
from minigemini.serve.schemas import APIError, validation_message
from minigemini.serve.state import ServerState

__all__ = ["router", "server_of"]

router = APIRouter()


def server_of(request: Request) -> ServerState:
    return request.app.state.server


async def read_json(request: Request, model_class):
    """The body as ``model_class``: 415 unless it is JSON, 400 for malformed JSON or a field out of its range."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";")[0].strip().lower()
        if media not in ("application/json", "*/*", "") and not media.endswith("+json"):
            raise APIError(415, f"the request body must be JSON (Content-Type: application/json), not {media}",
                           code="unsupported_media_type")  # fmt: skip
    raw = bytearray()  # not request.body(), which keeps the bytes until the response: only the parsed body stays
    async for chunk in request.stream():
        raw += chunk
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
    finally:
        del raw
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model_class.model_validate(data)
    except ValidationError as error:
        message, param = validation_message(error)
        raise APIError(400, message, param=param) from None


@router.get("/health")
async def health(request: Request):
    server = server_of(request)
    engine = server.engine
    return {
        "status": "ok",
        "model": server.settings.model_name,
        "queued": engine.pending(),
        "batches": engine.batches,
        "largest_batch": engine.largest_batch,
        "max_batch_size": engine.max_batch_size,
        "max_batch_images": engine.max_batch_images,
        "max_queue": engine.max_queue,
        "queued_images": engine.queued_images(),
        "max_queued_images": engine.max_queued_images,
        "rejected": engine.rejected,
        "cancelled": engine.cancelled,
    }


@router.get("/v1/models")
async def models(request: Request):
    name = server_of(request).settings.model_name
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "minigemini"}]}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    server = server_of(request)
    body = await read_json(request, server.ChatCompletionRequest)
    gone = asyncio.ensure_future(client_gone(request.receive))
    try:
        return await answer(server, body, gone)
    finally:
        gone.cancel()


@router.post("/v1/images/generations")
async def images_generations(request: Request):
    server = server_of(request)
    body = await read_json(request, server.ImageGenerationRequest)
    if server.image_generator is None:
        raise APIError(400, "this server has no text-to-image backend", code="unsupported")
    if body.response_format not in (None, "b64_json"):
        raise APIError(400, "response_format must be b64_json (this server does not host image URLs)",
                       param="response_format")  # fmt: skip
    width = height = None
    if body.size not in (None, "auto"):
        try:
            width, height = (int(v) for v in body.size.lower().split("x"))
        except ValueError:
            raise APIError(400, "size must look like 512x512", param="size") from None
        if not (64 <= width <= 2048 and 64 <= height <= 2048):
            raise APIError(400, "size must be between 64x64 and 2048x2048", param="size")
    data = []
    for index in range(body.n):
        seed = None if body.seed is None else body.seed + index
        if seed is None and body.n > 1:
            seed = index
        try:
            picture = await run_in_threadpool(server.image_generator, body.prompt,
                                              negative_prompt=body.negative_prompt, width=width, height=height,
                                              seed=seed)  # fmt: skip
        except ValueError as error:
            raise APIError(400, str(error), param="prompt") from None
        data.append({"b64_json": png_base64(picture), "revised_prompt": body.prompt})
    return {"created": int(time.time()), "data": data}
