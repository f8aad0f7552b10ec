"""ASGI middleware of `mgm serve`: the request-body limits (413, and 429 when the bodies in progress hold too
much) and the API key (401, and 400 for more than one Authorization header)."""

from __future__ import annotations

import hmac

from minigemini.serve.errors import APIError

__all__ = ["OPEN_PATHS", "APIKeyCheck", "BodyLimit"]

#: What stays open when the server has an API key; every other path needs the key (even one that is not served).
OPEN_PATHS = ("/health", "/openapi.json")


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
        too_large = APIError(
            413, f"request body is larger than this server's limit of {self.limit:,} bytes", code="request_too_large"
        )
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large.response()(scope, receive, send)
        if declared is not None and declared.isdigit() and self._busy(int(declared)):
            return await self._busy_error().response()(scope, receive, send)
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
        return APIError(
            429,
            f"the server is busy: the requests in progress hold {self.held:,} bytes of request "
            f"bodies (the limit is {self.total:,}); retry later",
            type="rate_limit_exceeded",
            code="server_busy",
        )


class APIKeyCheck:
    """ASGI middleware: every request but those of ``OPEN_PATHS`` needs ``Authorization: Bearer <key>`` (401
    otherwise).  A request with more than one Authorization header is refused (400): a proxy that reads the first
    and a server that reads the last would disagree about who is asking."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = [value for name, value in scope.get("headers") or () if name.lower() == b"authorization"]
        if len(headers) > 1:
            error = APIError(
                400,
                f"the request carries {len(headers)} Authorization headers; send exactly one",
                code="invalid_api_key",
            )
            return await error.response()(scope, receive, send)
        scheme, _, token = (headers[0] if headers else b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        message = (
            "missing API key: send it as 'Authorization: Bearer KEY'" if not headers else "incorrect API key provided"
        )
        error = APIError(401, message, code="invalid_api_key")
        await error.response({"www-authenticate": "Bearer"})(scope, receive, send)
