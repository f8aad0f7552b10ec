"""ASGI middleware of `mgm serve`: the request-body limit (413) and the API key (401)."""

from __future__ import annotations

import hmac
import json

from minigemini.serve.schemas import APIError

__all__ = ["APIKeyCheck", "BodyLimit", "send_error"]


class BodyLimit:
    """ASGI middleware: requests whose body exceeds ``limit`` bytes get 413 (declared or streamed size)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        too_large = APIError(413, f"request body is larger than this server's limit of {self.limit:,} bytes",
                             code="request_too_large")  # fmt: skip
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await send_error(send, too_large)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


async def send_error(send, error: APIError, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class APIKeyCheck:
    """ASGI middleware: ``/v1`` requests need ``Authorization: Bearer <key>`` (401 otherwise); the rest stays open."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope.get("path", "") + "/").startswith("/v1/"):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or ()).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        message = ("missing API key: send it as 'Authorization: Bearer KEY'" if not header
                   else "incorrect API key provided")  # fmt: skip
        error = APIError(401, message, type="invalid_request_error", code="invalid_api_key")
        await send_error(send, error, [(b"www-authenticate", b"Bearer")])
