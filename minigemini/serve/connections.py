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

import re
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from minigemini.serve.errors import APIError

__all__ = ["TIMED_OUT", "HeaderBlock", "ReadDeadlines", "deadline_protocol", "origin_form"]

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # the end of a header block (h11 takes bare newlines too)

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
    it names; other targets pass as they are, and a target that is no URL (``http://[::1/``) gets 400."""

    async def serve(scope, receive, send):
        root = scope.get("root_path", "")
        raw = scope.get("raw_path", b"")[len(root) :] if scope["type"] == "http" else b"/"
        if not raw.startswith(b"/"):
            try:
                target = urlsplit(raw.decode("latin-1"))
            except ValueError as error:  # unbalanced brackets around the host
                bad = APIError(400, f"the request target is not a valid URL: {error}", code="invalid_http_request")
                return await bad.response()(scope, receive, send)
            if target.scheme.lower() in ("http", "https") and target.netloc:
                path = target.path or "/"
                headers = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b"host", target.netloc.encode())]
                path_fields = {"path": root + unquote(path), "raw_path": (root + path).encode("latin-1")}
                scope = {**scope, **path_fields, "headers": headers}
        return await app(scope, receive, send)

    return serve


class HeaderBlock:
    """Bytes of the header block being received, over the writes that bring it.  h11 refuses a block above its
    limit only while it holds the block incomplete, so a whole block that arrives in one write would pass."""

    def __init__(self) -> None:
        self.size, self._tail = 0, b""

    def add(self, data: bytes) -> int:
        """Count ``data``; returns the block's size so far (when ``data`` ends the block, its whole size, and the count
        starts over for the next request)."""
        seen = self._tail + data
        end = _BLANK_LINE.search(seen)
        if end is None:
            self.size, self._tail = self.size + len(data), seen[-3:]
            return self.size
        size = self.size - len(self._tail) + end.end()
        self.reset()
        return size

    def reset(self) -> None:
        self.size, self._tail = 0, b""


class ReadDeadlines:
    """The deadlines and checks of ``deadline_protocol``, mixed into uvicorn's h11 protocol (which brings ``conn``,
    ``cycle``, ``transport``, ``loop`` and ``logger``); ``h11`` is the h11 module, given with the timeouts."""

    h11: Any
    header_timeout: float | None
    body_timeout: float | None
    _timer = None
    _phase: str | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.app = origin_form(self.app)
        self._head = HeaderBlock()

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_closing_response(APIError(400, msg, code="invalid_http_request")))
        self.transport.close()

    def _arm(self, phase: str) -> None:
        self._disarm()
        timeout = self.header_timeout if phase == "headers" else self.body_timeout
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
        if state is self.h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body")
        elif state is not self.h11.IDLE:  # the request is complete (or the connection is done): no read pending
            self._disarm()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm("headers")

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        state = self.conn.their_state
        if self._phase is None and state is self.h11.IDLE:
            self._arm("headers")  # the first bytes of the next request on a kept-alive connection
        if state not in (self.h11.IDLE, self.h11.DONE):  # a body, or the connection is closing: no header block
            self._head.reset()
        elif self._head.add(data) > self.conn._max_incomplete_event_size:
            limit = self.conn._max_incomplete_event_size
            return self.send_400_response(f"the request's header block is larger than {limit:,} bytes")
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is self.h11.IDLE:
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


def deadline_protocol(header_timeout: float | None, body_timeout: float | None) -> type:
    """uvicorn's h11 HTTP/1.1 protocol with header and body read deadlines in seconds (None: no deadline)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    settings = {"h11": h11, "header_timeout": header_timeout, "body_timeout": body_timeout}
    return type("DeadlineH11Protocol", (ReadDeadlines, H11Protocol), settings)
