"""ASGI middleware of `mgm serve`: the request-body limits (413, and 429 when the bodies in progress hold too
much) and the API key (401)."""

from __future__ import annotations

import hmac
import json

from minigemini.serve.schemas import APIError

__all__ = ["APIKeyCheck", "BodyLimit", "send_error"]


class BodyLimit:
    """ASGI middleware: requests whose body exceeds ``limit`` bytes get 413 (declared or streamed size).

    With ``total``, the bodies of all requests in progress together may hold at most ``total`` bytes (a body is held
    until its response is done: the app keeps it, parsed); a request that would go beyond gets 429, so that many
    concurrent large uploads cannot add up to more memory than that.
    """

    def __init__(self, app, limit: int, total: int | None = None):
        self.app, self.limit, self.total = app, limit, total
        self.held = 0  # bytes of the bodies of the requests in progress

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        too_large = APIError(413, f"request body is larger than this server's limit of {self.limit:,} bytes",
                             code="request_too_large")  # fmt: skip
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await send_error(send, too_large)
        if declared is not None and declared.isdigit() and self._busy(int(declared)):
            return await send_error(send, self._busy_error())
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if received + size > self.limit:
                    raise too_large
                if self._busy(size):
                    raise self._busy_error()
                received += size
                self.held += size
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.held -= received

    def _busy(self, size: int) -> bool:
        return self.total is not None and self.held + size > self.total

    def _busy_error(self) -> APIError:
        return APIError(429, f"the server is busy: the requests in progress hold {self.held:,} bytes of request "
                        f"bodies (the limit is {self.total:,}); retry later", type="rate_limit_exceeded",
                        code="server_busy")  # fmt: skip


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
