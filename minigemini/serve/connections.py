"""Slow clients: deadlines for reading a request's headers and its body.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no deadline for *reading* a request: a
client that sends its headers or its body a byte at a time (slow-loris), or connects and sends nothing, holds its
connection open for ever.  Headers are parsed before the ASGI app is called, so an ASGI middleware cannot see them;
the deadlines live in the HTTP protocol instead, a subclass of uvicorn's own h11 protocol (``deadline_protocol``,
passed as ``uvicorn.Config(http=...)``):

- headers: from the connection's first moment (or the first byte of the next request on a kept-alive connection)
  until the request's headers are complete, at most ``header_timeout`` seconds;
- body: from the end of the headers until the whole body has arrived, at most ``body_timeout`` seconds.

A request that misses its deadline is answered ``408 Request Timeout`` (unless a response was already sent), the
connection is closed and one INFO line is logged (uvicorn's ``uvicorn.error`` logger).  When the app was still reading
the body, it sees a disconnect; the request's scope then carries ``TIMED_OUT`` so that the app does not log it again.

Two more things the protocol does before any ASGI code runs:

- a request in absolute form (``GET http://host:port/v1/models HTTP/1.1``, RFC 9112 section 3.2.2) is served as the
  path it names, with the host it names (uvicorn's h11 protocol would route the whole URL as a path); every middleware
  (the API key's included) sees the path, as for the origin form;
- the answers the protocol writes itself (408 here, uvicorn's 400 for a malformed request) are OpenAI-shaped JSON
  errors like the app's.
"""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from minigemini.serve.schemas import APIError

__all__ = ["TIMED_OUT", "deadline_protocol", "origin_form"]

#: Scope key set on a request whose connection was closed because its body arrived too slowly.
TIMED_OUT = "minigemini.timed_out"


def _closing_response(error: APIError) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for the protocol to write itself."""
    response = error.response()
    head = f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n".encode()
    for name, value in response.raw_headers:
        head += name + b": " + value + b"\r\n"
    return head + b"connection: close\r\n\r\n" + response.body


def origin_form(app):
    """ASGI wrapper: a request whose target is in absolute form (``http://host/path``) gets the path and the host
    it names; other targets pass as they are."""

    async def serve(scope, receive, send):
        root = scope.get("root_path", "")
        raw = scope.get("raw_path", b"")[len(root) :] if scope["type"] == "http" else b"/"
        if not raw.startswith(b"/"):
            target = urlsplit(raw.decode("latin-1"))
            if target.scheme.lower() in ("http", "https") and target.netloc:
                path = target.path or "/"
                headers = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b"host", target.netloc.encode())]
                scope = {**scope, "path": root + unquote(path), "raw_path": (root + path).encode("latin-1"),
                         "headers": headers}  # fmt: skip
        return await app(scope, receive, send)

    return serve


def deadline_protocol(header_timeout: float | None, body_timeout: float | None) -> type:
    """uvicorn's h11 HTTP/1.1 protocol with header and body read deadlines in seconds (None: no deadline)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        _timer = None
        _phase: str | None = None

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.app = origin_form(self.app)

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_closing_response(APIError(400, msg, code="invalid_http_request")))
            self.transport.close()

        def _arm(self, phase: str) -> None:
            self._disarm()
            timeout = header_timeout if phase == "headers" else body_timeout
            if timeout is not None:
                self._phase = phase
                self._timer = self.loop.call_later(timeout, self._expired, phase, timeout)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._phase = None, None

        def _follow(self) -> None:
            """Move the deadline along with the client's side of the h11 state machine."""
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                if self._phase != "body":
                    self._arm("body")
            elif state is not h11.IDLE:  # the request is complete (or the connection is done): no read pending
                self._disarm()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm("headers")

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._phase is None and self.conn.their_state is h11.IDLE:
                self._arm("headers")  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.IDLE:
                self._disarm()  # between requests: uvicorn's keep-alive timeout applies
            else:
                self._follow()

        def _expired(self, phase: str, timeout: float) -> None:
            self._timer, self._phase = None, None
            if self.transport.is_closing():
                return
            reason = f"the request {'headers' if phase == 'headers' else 'body'} did not arrive within {timeout:g} s"
            cycle = self.cycle if phase == "body" else None
            if cycle is None or not cycle.response_started:
                self.transport.write(_closing_response(APIError(408, f"request timeout: {reason}", code="timeout")))
            if cycle is not None:
                cycle.scope[TIMED_OUT] = True  # type: ignore[literal-required]
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
            self.logger.info("%s - closed a slow connection: %s", client, reason)
            self.transport.close()

    return DeadlineH11Protocol
