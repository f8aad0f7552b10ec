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

With ``MGM_API_KEY`` (or ``--api-key KEY``) every request needs one ``Authorization: Bearer KEY`` header (else 401;
two such headers: 400) but ``/health`` and ``/openapi.json``, which stay open.  At most ``--max-queue`` requests
(``--max-queued-images`` images) wait for the model: more get 429 at once (OpenAI's ``rate_limit_exceeded``), never a
hang.

Hostile clients cost bounded work (``docs/serving.md``): a request whose images would decode to more than
``--max-request-pixels`` is refused from their headers; at most ``--decode-slots`` requests decode images at once,
each image shrunk to the model's input size before the next one is decoded; a prompt with more characters than the
context could hold is refused before it is tokenised; a client that goes away stops its generation within one decode
step (streaming or not) and costs one INFO log line.

All requests share one model: a worker thread batches concurrent chat requests into left-padded ``generate`` calls
(``engine.py``).  Bad input -- malformed JSON or base64, unreadable or oversized images, refused sources, more images
than placeholders, prompts longer than the context, ``max_tokens`` above ``--max-tokens-limit`` -- gets a 4xx with
an OpenAI-shaped JSON error (``{"error": {"message", "type", "param", "code"}}``, one shape for every status),
never a traceback; bodies above ``--max-request-mb`` get 413, bodies sent as something other than JSON get 415.

The routes are in ``routes.py`` (a chat completion in ``chat.py``); this module puts them together with the middleware,
the error handlers, the lifespan of the batching engine and the schema.
"""

import contextlib
import logging
from typing import Any

from minigemini.loading import model_and_processor
from minigemini.serve.batching import BatchingEngine
from minigemini.serve.connections import TIMED_OUT
from minigemini.serve.errors import APIError, validation_message
from minigemini.serve.middleware import OPEN_PATHS, APIKeyCheck, BodyLimit
from minigemini.serve.settings import ServerSettings
from minigemini.serve.state import ServerState

__all__ = ["create_app"]

logger = logging.getLogger("minigemini.serve")


def create_app(
    model,
    processor,
    settings: ServerSettings | None = None,
    image_generator=None,
    max_batch_size: int = 8,
    batch_wait: float = 0.005,
    engine: BatchingEngine | None = None,
):
    """The FastAPI app.  Its ``ServerState`` (``app.state.server``, the engine at ``app.state.engine``) starts and
    stops with the app's lifespan."""
    from fastapi import FastAPI

    from minigemini.serve.routes import router

    model, processor = model_and_processor(model, processor)  # loaded ones, or directories
    settings = settings or ServerSettings()
    engine = engine or BatchingEngine(
        model,
        processor,
        max_batch_size=max_batch_size,
        batch_wait=batch_wait,
        max_queue=settings.max_queue,
        max_queued_images=settings.max_queued_images,
        max_batch_images=settings.max_batch_images,
    )
    server = ServerState(model, processor, settings, engine, image_generator)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.start()
        try:
            yield
        finally:
            server.close()

    app = FastAPI(title="Mini-Gemini", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server, app.state.engine, app.state.settings = server, engine, settings
    app.include_router(router)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, total=settings.max_inflight_bytes)
    if settings.api_key:
        # outside the body limit: the bodies of unauthenticated requests are not even read
        app.add_middleware(APIKeyCheck, key=settings.api_key)

    answer_errors(app)
    app.openapi = lambda: openapi(app, settings)
    return app


def answer_errors(app) -> None:
    """Every error the app meets answered in the one shape (``APIError``); a client gone gets one INFO line."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response

    from minigemini.serve.chat import ClientGone

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error):
        message, param = validation_message(error)
        return APIError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return APIError(error.status_code, str(error.detail), type=kind).response(error.headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request, error: ClientGone):
        logger.info("%s %s: the client went away %s", request.method, request.url.path, error)
        return Response(status_code=499)  # nobody reads it: the connection is gone

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request, error):
        if not request.scope.get(TIMED_OUT):  # else the server closed it for being slow, and said so
            logger.info(
                "%s %s: the client disconnected before sending the whole request body", request.method, request.url.path
            )
        return Response(status_code=499)

    app.add_middleware(InternalErrors)  # outermost: an error anywhere below is answered and logged once


class InternalErrors:
    """ASGI middleware: an unexpected error is logged once, with its traceback, and answered 500 ``server_error``.

    (An ``Exception`` handler of the app answers too, but Starlette then re-raises the error for the server to log:
    every traceback twice.)  After the response has started nothing can be answered: the error goes on to the server.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if started or scope["type"] != "http":
                raise
            logger.exception("%s %s: unhandled error", scope.get("method"), scope.get("path"))
            await APIError(500, "internal server error", type="server_error").response()(scope, receive, send)


def openapi(app, settings: ServerSettings) -> dict[str, Any]:
    """FastAPI's schema, the request bodies' definitions moved to the components (the routes read their bodies
    themselves, ``routes.json_body``), and the API key where it is needed."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title,
        version=app.version,
        routes=app.routes,
        description="OpenAI-compatible API of a Mini-Gemini model",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for item in schema["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            body = content.get("schema", {})
            if "title" in body and "$ref" not in body:
                components.update(body.pop("$defs", {}))
                components[body["title"]] = body
                content["schema"] = {"$ref": f"#/components/schemas/{body['title']}"}
    if settings.api_key:
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, item in schema["paths"].items():
            if path not in OPEN_PATHS:
                for operation in item.values():
                    operation["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
