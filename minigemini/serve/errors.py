"""The one error factory of `mgm serve`: ``APIError``, answered as OpenAI's ``{"error": {...}}`` body
(``protocol.ErrorResponse``) by the routes, the exception handlers, the middleware, the HTTP protocol and the stream
alike."""

from __future__ import annotations

import json

__all__ = ["APIError", "validation_message"]


class APIError(Exception):
    """An error answered as ``ErrorResponse`` with an HTTP status: whole (``response``) or as a stream's event (``sse``)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self):
        """The ``protocol.ErrorResponse`` of this error."""
        from minigemini.serve.protocol import ErrorInfo, ErrorResponse

        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code))

    def response(self, headers: dict[str, str] | None = None):
        from starlette.responses import Response

        return Response(self.body().model_dump_json(), self.status, headers, media_type="application/json")

    def sse(self) -> str:
        """The error as a server-sent event, for a stream whose headers are already sent."""
        from minigemini.serve.protocol import sse

        return sse(self.body())


def validation_message(error) -> tuple[str, str | None]:
    """A pydantic validation error as (message, param) for ``APIError``."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = first.get("msg", "invalid value")
    if first.get("type") == "finite_number":
        message = (
            f"{json.dumps(first.get('input'), default=str)} is not a number this field accepts; give a finite number"
        )
    return (f"{location}: {message}" if location else message), (location or None)
