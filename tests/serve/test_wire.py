"""What reaches a real `mgm serve` (uvicorn with the server's own h11 protocol, on 127.0.0.1) as raw bytes: requests
in absolute form, duplicated Authorization headers, non-finite numbers, and the shape of every error, including the
ones the protocol writes itself."""

import json
import logging
import socket

import pytest

from minigemini.loading import load_pretrained
from minigemini.serve.app import create_app
from minigemini.serve.connections import deadline_protocol
from minigemini.serve.settings import ServerSettings
from tests.helpers.serving import run_in_thread, save_tiny_mgm

KEY = b"s3cret"
GOOD = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}'


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    model, processor = load_pretrained(save_tiny_mgm(tmp_path_factory.mktemp("mgm-wire")))
    settings = ServerSettings(api_key=KEY.decode(), default_max_tokens=1, max_request_bytes=1 << 20)
    return create_app(model, processor, settings)


@pytest.fixture(scope="module")
def server(app):
    import uvicorn

    config = uvicorn.Config(app, log_config=None, timeout_keep_alive=5,
                            http=deadline_protocol(0.5, 5))  # fmt: skip
    with run_in_thread(uvicorn.Server(config)) as base:
        host, port = base.removeprefix("http://").split(":")
        yield host, int(port)


def exchange(server, head: bytes, body: bytes = b"", wait: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send one request (``head``: request line and headers, without the blank line) on a new connection; return the
    status, headers and body of the answer (read until the server closes the connection)."""
    with socket.create_connection(server, timeout=wait) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n" + body if head else b"")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, payload


def post(path: bytes, body: bytes, *headers: bytes, target: bytes | None = None) -> bytes:
    lines = [b"POST " + (target or path) + b" HTTP/1.1", b"Host: test", b"Content-Type: application/json",
             b"Content-Length: %d" % len(body), *headers]  # fmt: skip
    return b"\r\n".join(lines) + b"\r\n"


def get(target: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET " + target + b" HTTP/1.1", b"Host: test", *headers]) + b"\r\n"


AUTH = b"Authorization: Bearer " + KEY


def test_two_authorization_headers_are_refused(server):
    for first, second in [(b"Bearer wrong", b"Bearer " + KEY), (b"Bearer " + KEY, b"Bearer wrong"),
                          (b"Bearer " + KEY, b"Bearer " + KEY)]:  # fmt: skip
        status, _, body = exchange(server, get(b"/v1/models", b"Authorization: " + first, b"Authorization: " + second))
        assert status == 400, (first, second, body)
        assert "2 Authorization headers" in json.loads(body)["error"]["message"]
    assert exchange(server, get(b"/v1/models", AUTH))[0] == 200  # one is fine


def test_a_request_in_absolute_form_is_served_as_its_path(server):
    host, port = server
    url = b"http://%s:%d/v1/models" % (host.encode(), port)
    status, _, body = exchange(server, get(url, AUTH))
    assert status == 200 and json.loads(body)["data"][0]["id"] == "minigemini"
    status, _, body = exchange(server, post(b"", GOOD, AUTH, target=url.replace(b"models", b"chat/completions")), GOOD)
    assert status == 200 and json.loads(body)["object"] == "chat.completion"
    assert exchange(server, get(b"https://elsewhere.example/health"))[0] == 200  # open, as in origin form
    for target in (url, b"http://x/v1/../v1/models", b"HTTP://X//v1/models", b"http://x/nothing"):
        status, _, body = exchange(server, get(target))  # never a way around the key
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key", target


@pytest.mark.parametrize(
    "field, value",
    [("temperature", b"NaN"), ("temperature", b"Infinity"), ("top_p", b"NaN"), ("top_p", b"-Infinity"),
     ("presence_penalty", b"NaN"), ("frequency_penalty", b"1e999")],
)  # fmt: skip
def test_non_finite_numbers_are_named_as_such(server, field, value):
    body = GOOD[:-1] + b', "%s": %s}' % (field.encode(), value)
    status, _, answer = exchange(server, post(b"/v1/chat/completions", body, AUTH), body)
    error = json.loads(answer)["error"]
    assert status == 400 and error["param"] == field
    assert "is not a number this field accepts" in error["message"], error


def test_every_error_has_one_shape(server):
    """400, 401, 404, 405, 408, 413, 415, and the protocol's own 400: the same JSON, rendered the same way."""
    answers = {
        "bad JSON": exchange(server, post(b"/v1/chat/completions", b"{", AUTH), b"{"),
        "no key": exchange(server, get(b"/v1/models")),
        "not found": exchange(server, get(b"/v1/nothing", AUTH)),
        "wrong method": exchange(server, get(b"/v1/chat/completions", AUTH)),
        "too large": exchange(
            server, post(b"/v1/chat/completions", b"", AUTH).replace(b"Length: 0", b"Length: 3000000")
        ),
        "not JSON": exchange(server, post(b"/v1/chat/completions", GOOD, AUTH).replace(b"json", b"xml"), GOOD),
        "malformed request": exchange(server, b"GET /v1/models HTTP/1.1\r\nBad Header\r\n"),
        "slow headers": exchange(server, b""),
    }
    statuses = {name: status for name, (status, _, _) in answers.items()}
    assert statuses == {"bad JSON": 400, "no key": 401, "not found": 404, "wrong method": 405, "too large": 413,
                        "not JSON": 415, "malformed request": 400, "slow headers": 408}  # fmt: skip
    for name, (_, headers, body) in answers.items():
        assert headers["content-type"] == "application/json", name
        assert int(headers["content-length"]) == len(body), name
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], (name, error)
        assert body == json.dumps({"error": error}, separators=(",", ":")).encode(), (name, body)


def assert_one_shape(status: int, headers: dict[str, str], body: bytes) -> dict:
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


@pytest.mark.parametrize("target", [b"http://[::1/v1/models", b"http://evil]/v1/models", b"https://[x/health"])
@pytest.mark.parametrize("key", [(), (AUTH,)], ids=["without key", "with key"])
def test_an_absolute_target_that_is_no_url_is_a_400(server, target, key):
    status, headers, body = exchange(server, get(target, *key))
    assert status == 400, body
    error = assert_one_shape(status, headers, body)
    assert error["code"] == "invalid_http_request" and "not a valid URL" in error["message"]


def test_a_header_block_over_16_kib_is_a_400_even_in_one_write(server):
    """h11 counts a header block only while it holds it incomplete: the protocol counts the whole block."""
    status, _, _ = exchange(server, get(b"/health", b"X-Pad: " + b"a" * 8000))
    assert status == 200
    for size in (17_000, 64_000):
        status, headers, body = exchange(server, get(b"/health", b"X-Pad: " + b"a" * size))
        assert status == 400, size
        assert "header block is larger than 16,384 bytes" in assert_one_shape(status, headers, body)["message"]
    # the same block in small writes is h11's own refusal
    with socket.create_connection(server, timeout=10) as sock:
        head = get(b"/health", b"X-Pad: " + b"a" * 40_000)
        for start in range(0, len(head), 1000):
            try:
                sock.sendall(head[start : start + 1000])
            except OSError:
                break
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    # a body in the same write as a small header block is not counted as headers
    body = GOOD[:-1] + b', "user": "' + b"x" * 40_000 + b'"}'
    assert exchange(server, post(b"/v1/chat/completions", body, AUTH), body)[0] == 200


def test_head_health_answers(server):
    status, headers, body = exchange(server, b"HEAD /health HTTP/1.1\r\nHost: test\r\n")
    assert status == 200 and headers["content-type"] == "application/json" and body == b""


def test_an_unexpected_error_is_a_500_logged_once(server, app, monkeypatch, caplog):
    def broken():
        raise RuntimeError("the engine broke")

    monkeypatch.setattr(app.state.engine, "pending", broken)
    with caplog.at_level(logging.INFO):
        status, headers, body = exchange(server, get(b"/health"))
    assert status == 500
    error = assert_one_shape(status, headers, body)
    assert error == {"message": "internal server error", "type": "server_error", "param": None, "code": None}
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1 and "the engine broke" in str(tracebacks[0].exc_info[1]), caplog.records
