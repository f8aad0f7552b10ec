"""Slow clients against a real uvicorn server on 127.0.0.1 (short deadlines): slow headers, slow bodies and silent
connections are answered 408 and closed after the deadline, with one INFO line; kept-alive connections and normal
requests are not affected."""

import contextlib
import logging
import socket
import time

import pytest

from minigemini.loading import load_pretrained
from minigemini.serve.app import create_app
from minigemini.serve.connections import deadline_protocol
from minigemini.serve.settings import ServerSettings
from tests.helpers.serving import run_in_thread, save_tiny_mgm

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """create_app behind uvicorn with the deadline protocol; log_config=None so that its records reach caplog."""
    import uvicorn

    model, processor = load_pretrained(save_tiny_mgm(tmp_path_factory.mktemp("mgm-slow")))
    app = create_app(model, processor, ServerSettings(default_max_tokens=1))
    config = uvicorn.Config(app, log_config=None, timeout_keep_alive=5,
                            http=deadline_protocol(HEADER_TIMEOUT, BODY_TIMEOUT))  # fmt: skip
    with run_in_thread(uvicorn.Server(config)) as base:
        host, port = base.removeprefix("http://").split(":")
        yield host, int(port)


@contextlib.contextmanager
def connect(server):
    sock = socket.create_connection(server, timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock, limit: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it (seconds from now)."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def read_response(sock) -> bytes:
    """One whole response (head and a Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def request(body: bytes = b"") -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body  # fmt: skip


GOOD = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}'


def slow_lines(caplog):
    return [r for r in caplog.records if "closed a slow connection" in r.getMessage()]


def test_slow_headers_are_cut_off(server, caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="uvicorn.error")  # whatever an earlier `mgm serve` configured
    with connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n")  # and never the end of the headers
        data, elapsed = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout") and b"request headers did not arrive" in data
    assert elapsed >= HEADER_TIMEOUT * 0.8  # closed by the deadline, not at once
    [line] = slow_lines(caplog)
    assert line.levelno == logging.INFO and "within 0.5 s" in line.getMessage()


def test_a_silent_connection_is_cut_off(server):
    with connect(server) as sock:
        data, _ = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408")


def test_slow_body_is_cut_off_with_one_log_line(server, caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="uvicorn.error")  # whatever an earlier `mgm serve` configured
    with connect(server) as sock:
        sock.sendall(request(GOOD)[: -len(GOOD) + 10])  # the headers promise the body; 10 bytes of it arrive
        data, elapsed = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408") and b"request body did not arrive within 0.8 s" in data
    assert elapsed >= BODY_TIMEOUT * 0.8
    time.sleep(0.2)  # let the app notice the disconnect
    assert len(slow_lines(caplog)) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not [r for r in caplog.records if "disconnected before sending" in r.getMessage()]  # said once, above


def test_prompt_requests_and_kept_alive_connections_are_untouched(server):
    with connect(server) as sock:
        sock.sendall(request(GOOD))
        first = read_response(sock)
        time.sleep(HEADER_TIMEOUT * 2)  # idle between requests: the keep-alive timeout (5 s) applies, not ours
        sock.sendall(request(GOOD))
        second = read_response(sock)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
    with connect(server) as sock:  # a body sent in pieces, each well within the deadline
        whole = request(GOOD)
        for start in range(0, len(whole), 40):
            sock.sendall(whole[start : start + 40])
            time.sleep(0.02)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
