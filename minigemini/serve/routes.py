"""The routes of `mgm serve`, module-level handlers on one ``APIRouter``; what they share is ``app.state.server`` (a
``ServerState``), so that a route can be read, tested and changed alone.

The handlers read request bodies themselves (``read_json``) to answer every malformed body OpenAI's way; the schema
learns each body from its model (``json_body``, FastAPI's way for a route that reads its own body), each reply from
the route's ``response_model`` and each error from ``protocol.ErrorResponse``.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from minigemini.serve.chat import answer, client_gone, png_base64
from minigemini.serve.errors import APIError, validation_message
from minigemini.serve.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    GeneratedImage,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ModelCard,
    ModelList,
)
from minigemini.serve.state import ServerState

__all__ = ["json_body", "router", "server_of"]

router = APIRouter()

#: The errors a route with a JSON body may answer, each an ``ErrorResponse``.
ERRORS = {
    status: {"model": ErrorResponse, "description": "an OpenAI-shaped error"} for status in (400, 401, 413, 415, 429)
}


def json_body(model) -> dict:
    """``openapi_extra`` of a route that reads its JSON body itself (``read_json``): the body's schema, from ``model``
    (``app.openapi`` moves its definitions to the components)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def json_response(payload) -> Response:
    """A reply model, sent with ``model_dump_json``."""
    return Response(payload.model_dump_json(), media_type="application/json")


def server_of(request: Request) -> ServerState:
    return request.app.state.server


async def read_json(request: Request, model_class):
    """The body as ``model_class``: 415 unless it is JSON, 400 for malformed JSON or a field out of its range."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";")[0].strip().lower()
        if media not in ("application/json", "*/*", "") and not media.endswith("+json"):
            raise APIError(
                415,
                f"the request body must be JSON (Content-Type: application/json), not {media}",
                code="unsupported_media_type",
            )
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
@router.head("/health", include_in_schema=False)  # for monitors that ask with HEAD
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


@router.get("/v1/models", response_model=ModelList)
async def models(request: Request):
    return json_response(ModelList(data=[ModelCard(id=server_of(request).settings.model_name)]))


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses=ERRORS,
    openapi_extra=json_body(ChatCompletionRequest),
)
async def chat_completions(request: Request):
    body = await read_json(request, ChatCompletionRequest)
    gone = asyncio.ensure_future(client_gone(request.receive))
    try:
        reply = await answer(server_of(request), body, gone)
    finally:
        gone.cancel()
    return reply if isinstance(reply, Response) else json_response(reply)


@router.post(
    "/v1/images/generations",
    response_model=ImageGenerationResponse,
    responses=ERRORS,
    openapi_extra=json_body(ImageGenerationRequest),
)
async def images_generations(request: Request):
    server = server_of(request)
    body = await read_json(request, ImageGenerationRequest)
    if server.image_generator is None:
        raise APIError(400, "this server has no text-to-image backend", code="unsupported")
    if body.response_format not in (None, "b64_json"):
        raise APIError(
            400, "response_format must be b64_json (this server does not host image URLs)", param="response_format"
        )
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
            picture = await run_in_threadpool(
                server.image_generator,
                body.prompt,
                negative_prompt=body.negative_prompt,
                width=width,
                height=height,
                seed=seed,
            )
        except ValueError as error:
            raise APIError(400, str(error), param="prompt") from None
        data.append(GeneratedImage(b64_json=png_base64(picture), revised_prompt=body.prompt))
    return json_response(ImageGenerationResponse(created=int(time.time()), data=data))
