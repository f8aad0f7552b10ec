"""``mgm serve``: an OpenAI-compatible HTTP API for a Mini-Gemini model (FastAPI + uvicorn).

Endpoints:

- ``POST /v1/chat/completions``: OpenAI chat messages; user content may hold ``image_url`` parts (base64 ``data:``
  URLs; ``http(s)://`` only with ``--allow-remote-urls``; local paths / ``file://`` only inside
  ``--allow-local-files DIR``).  ``stream: true`` answers with server-sent events ending in ``data: [DONE]``.
  Extensions (pass them with the openai client's ``extra_body``): ``generate_image: true`` asks for a picture the
  paper's way (`` <GEN>``); the picture made from the answer's ``<h>prompt</h>`` comes back in
  ``choices[0].message.images = [{"b64_json", "prompt", "mime_type"}]`` (in the last chunk's ``delta`` when
  streaming).  ``ocr: true`` appends the OCR tokens of the last user message's images.
- ``POST /v1/images/generations``: ``prompt`` (+ ``n``, ``size`` ``"WxH"``, ``seed``) -> ``b64_json`` PNGs from the
  text-to-image backend.
- ``GET /v1/models``, ``GET /health`` (queue length and batching counters), ``GET /openapi.json`` (the schema).

With ``MGM_API_KEY`` (or ``--api-key KEY``) every ``/v1`` request needs ``Authorization: Bearer KEY`` (else 401);
``/health`` and ``/openapi.json`` stay open.  At most ``--max-queue`` requests (``--max-queued-images`` images) wait
for the model: more get 429 at once (OpenAI's ``rate_limit_exceeded``), never a hang.

Hostile clients cost bounded work (``docs/serving.md``): a request whose images would decode to more than
``--max-request-pixels`` is refused from their headers; at most ``--decode-slots`` requests decode images at once,
each image shrunk to the model's input size before the next one is decoded; a prompt with more characters than the
context could hold is refused before it is tokenised; a client that goes away stops its generation within one decode
step (streaming or not) and costs one INFO log line.

All requests share one model: a worker thread batches concurrent chat requests into left-padded ``generate`` calls
(``engine.py``).  Bad input -- malformed JSON or base64, unreadable or oversized images, refused sources, more images
than placeholders, prompts longer than the context, ``max_tokens`` above ``--max-tokens-limit`` -- gets a 4xx with an OpenAI-shaped JSON error
(``{"error": {"message", "type", "param", "code"}}``), never a traceback; bodies above ``--max-request-mb`` get 413,
bodies sent as something other than JSON get 415.
"""

import asyncio
import base64
import io
import json
import logging
import time
import uuid
from typing import Any

from minigemini.engine import GenerationRequest, context_budget
from minigemini.generation import extract_image_prompt, request_image
from minigemini.serve.batching import BatchingEngine, Job, QueueFull
from minigemini.serve.connections import TIMED_OUT
from minigemini.serve.images import ImageFetcher
from minigemini.serve.limits import PixelBudget, character_limit
from minigemini.serve.middleware import APIKeyCheck, BodyLimit
from minigemini.serve.schemas import APIError, request_models, validation_message
from minigemini.serve.settings import ServerSettings
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["create_app"]

logger = logging.getLogger("minigemini.serve")


class ClientGone(Exception):
    """The client disconnected before its answer was ready; the work done for it has been dropped."""


async def _client_gone(receive) -> None:
    """Return once the client has disconnected.  Await it after the body was read: a request's next ASGI message is
    then ``http.disconnect``, which the server sends when the connection drops (or after the response)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _resolve(future, value) -> None:
    if not future.done():
        future.set_result(value)


def _text_of(content, param: str, images: list | None) -> str:
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


def create_app(model, processor, settings: ServerSettings | None = None, image_generator=None,
               max_batch_size: int = 8, batch_wait: float = 0.005, engine: BatchingEngine | None = None):  # fmt: skip
    """The FastAPI app.  Its batching engine (``app.state.engine``) starts and stops with the app's lifespan."""
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from pydantic import ValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    settings = settings or ServerSettings()
    engine = engine or BatchingEngine(model, processor, max_batch_size=max_batch_size, batch_wait=batch_wait,
                                      max_queue=settings.max_queue,
                                      max_queued_images=settings.max_queued_images,
                                      max_batch_images=settings.max_batch_images)  # fmt: skip
    fetcher = ImageFetcher(settings)
    ChatCompletionRequest, ImageGenerationRequest = request_models()
    image_processor = getattr(processor, "image_processor", None)
    # Each image is shrunk to the model's input (the processor's own padded, resized square, which the processor then
    # takes as it is) before the next one is decoded, and counted as that padded square in the pixel budget.
    shrink = getattr(image_processor, "to_square_hr", None)
    square = bool(getattr(image_processor, "pad_to_square", True))
    max_characters = character_limit(engine.context_limit, processor.tokenizer)
    decode_slots: list[asyncio.Semaphore] = []  # made on the server's event loop (a new one per lifespan)

    def decode_slot() -> asyncio.Semaphore:
        if not decode_slots:
            decode_slots.append(asyncio.Semaphore(settings.decode_slots))
        return decode_slots[0]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        decode_slots.clear()
        engine.start()
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(title="Mini-Gemini", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.settings = settings
    app.state.image_generator = image_generator
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, total=settings.max_inflight_bytes)
    if settings.api_key:
        app.add_middleware(APIKeyCheck, key=settings.api_key)  # outermost: unauthenticated bodies are not even read

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error):
        message, param = validation_message(error)
        return JSONResponse(APIError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(APIError(error.status_code, str(error.detail), type=kind).body(),
                            status_code=error.status_code)  # fmt: skip

    @app.exception_handler(ClientGone)
    async def client_gone(request, error: ClientGone):
        logger.info("%s %s: the client went away %s", request.method, request.url.path, error)
        return Response(status_code=499)  # nobody reads it: the connection is gone

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request, error):
        if not request.scope.get(TIMED_OUT):  # else the server closed it for being slow, and said so
            logger.info("%s %s: the client disconnected before sending the whole request body", request.method,
                        request.url.path)  # fmt: skip
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def internal_error(request, error):
        logger.exception("unhandled error")
        body = APIError(500, "internal server error", type="server_error").body()
        return JSONResponse(body, status_code=500)

    async def read_json(request: Request, model_class):
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

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": settings.model_name,
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

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "minigemini"}]}  # fmt: skip

    def queue_full(reason: str) -> APIError:
        return APIError(429, f"the server is busy: {reason}; retry later", type="rate_limit_exceeded",
                        code="queue_full")  # fmt: skip

    async def prepare(body, gone: asyncio.Future) -> GenerationRequest:
        """Check the request against the server's limits, cheapest checks first, then decode and encode it."""
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
            text = _text_of(message.content, param, found)
            if found:
                if len(sources) + len(found) > settings.max_images:
                    raise APIError(400, f"too many images: this server takes at most {settings.max_images} per "
                                   "request", param=param, code="too_many_images")  # fmt: skip
                sources.extend(found)
                text = IMAGE_PLACEHOLDER * len(found) + text
            if role == "user":
                last_user = (len(messages), len(sources) - len(found or []), len(sources))
            messages.append({"role": role, "content": text})
        if last_user is None or messages[-1]["role"] != "user":
            raise APIError(400, "the last message must be a user message", param="messages")
        characters = sum(len(m["content"]) for m in messages)
        if max_characters is not None and characters > max_characters:
            raise APIError(400, f"the messages hold {characters:,} characters, more than the model's context of "
                           f"{engine.context_limit} tokens can take ({max_characters:,} characters at most); shorten "
                           "the conversation", param="messages", code="context_length_exceeded")  # fmt: skip
        if sources and (busy := engine.full(images=len(sources))):
            raise queue_full(busy)
        encoded, pixels = [], PixelBudget(settings.max_request_pixels, square)
        for url, where in sources:  # bytes and header sizes only: the budget refuses before anything is decoded
            raw = await fetcher.fetch(url, where)
            width, height = await run_in_threadpool(fetcher.size, raw, where)
            pixels.add(width, height, where)
            encoded.append((raw, where))
        position, first_image, end_image = last_user
        ocr_images = range(first_image, end_image) if body.ocr else range(0)

        def encode():
            pictures, ocr = [], []
            for index, (raw, where) in enumerate(encoded):
                picture = fetcher.decode(raw, where)
                if index in ocr_images:
                    from minigemini.ocr import ocr_tokens

                    ocr.extend(ocr_tokens(picture))
                pictures.append(shrink(picture) if shrink is not None else picture)
                del picture  # the full-size picture goes before the next one is decoded
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
                async with decode_slot():
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
            budget = context_budget(model, inputs["input_ids"].shape[1], requested)
        except ValueError as error:
            raise APIError(400, str(error), param="messages", code="context_length_exceeded") from None
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        temperature = settings.default_temperature if body.temperature is None else body.temperature
        return GenerationRequest(inputs, budget, temperature, body.top_p or 1.0, stop=stop[:4])

    async def make_picture(text: str, seed: int | None) -> list[dict[str, str]]:
        prompt = extract_image_prompt(text)
        if prompt is None or image_generator is None:
            return []
        picture = await run_in_threadpool(image_generator, prompt, seed=seed)
        return [{"b64_json": _png_base64(picture), "prompt": prompt, "mime_type": "image/png"}]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request, ChatCompletionRequest)
        gone = asyncio.ensure_future(_client_gone(request.receive))
        try:
            return await answer(body, gone)
        finally:
            gone.cancel()

    async def answer(body, gone: asyncio.Future):
        generation = await prepare(body, gone)
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
                message["images"] = await make_picture(generation.text, body.seed)
            return {
                "id": completion_id, "object": "chat.completion", "created": created, "model": settings.model_name,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(), "logprobs": None}],
                "usage": usage(job),
            }  # fmt: skip

        def chunk(delta: dict[str, Any], reason: str | None = None, **extra) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": settings.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}],
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n"  # fmt: skip

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
                        final["images"] = await make_picture(generation.text, body.seed)
                    yield chunk(final, finish_reason())
                    if body.stream_options is not None and body.stream_options.include_usage:
                        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                   "model": settings.model_name, "choices": [], "usage": usage(job)}  # fmt: skip
                        yield f"data: {json.dumps(payload)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                if not job.done.is_set():  # the client went away: stop generating for it
                    engine.cancel(job)
                    logger.info("POST /v1/chat/completions: the client went away while its answer was streaming; "
                                "generation cancelled")  # fmt: skip

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    @app.post("/v1/images/generations")
    async def images_generations(request: Request):
        body = await read_json(request, ImageGenerationRequest)
        if image_generator is None:
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
                picture = await run_in_threadpool(image_generator, body.prompt, negative_prompt=body.negative_prompt,
                                                  width=width, height=height, seed=seed)  # fmt: skip
            except ValueError as error:
                raise APIError(400, str(error), param="prompt") from None
            data.append({"b64_json": _png_base64(picture), "revised_prompt": body.prompt})
        return {"created": int(time.time()), "data": data}

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the JSON request bodies (the handlers read them raw to answer errors OpenAI's way)."""
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description="OpenAI-compatible API of a Mini-Gemini model")  # fmt: skip
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        error = {"description": "an OpenAI-shaped error", "content": {"application/json": {"schema": {
            "type": "object", "required": ["error"], "properties": {"error": {"type": "object"}}}}}}  # fmt: skip
        bodies = {"/v1/chat/completions": ChatCompletionRequest, "/v1/images/generations": ImageGenerationRequest}
        for path, model_class in bodies.items():
            body_schema = model_class.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body_schema.pop("$defs", {}))
            components[model_class.__name__] = body_schema
            operation = schema["paths"][path]["post"]
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model_class.__name__}"}}}}  # fmt: skip
            operation.setdefault("responses", {}).update(
                {str(code): error for code in (400, 401, 413, 415, 429)})  # fmt: skip
        if settings.api_key:
            components_root = schema["components"]
            components_root["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, item in schema["paths"].items():
                if path.startswith("/v1/"):
                    for operation in item.values():
                        operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return app


def _png_base64(picture) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
