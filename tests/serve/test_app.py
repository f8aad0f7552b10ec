"""`mgm serve` with the official openai client against a server started here (uvicorn in a thread, 127.0.0.1)."""

import argparse
import base64
import io
import json
import threading
import time

import httpx
import openai
import pytest
from PIL import Image

from minigemini.cli import serve as serve_cli
from minigemini.inference import chat
from minigemini.loading import load_pretrained
from minigemini.serve.app import create_app
from minigemini.serve.settings import ServerSettings
from minigemini.synthetic import COLOURS
from tests.helpers.serving import run_in_thread, save_tiny_mgm, script_answers, solid


def data_url(image, format="PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def ask(text, *image_urls):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": u}} for u in image_urls]
             + [{"type": "text", "text": text}]}]  # fmt: skip


def decode_png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_mgm(tmp_path_factory.mktemp("mgm"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("allowed")
    solid((0, 255, 0)).save(root / "green.png")
    outside = tmp_path_factory.mktemp("outside")
    solid((0, 0, 255)).save(outside / "blue.png")
    return root, outside


@pytest.fixture(scope="module")
def server(model_dir, files):
    """`mgm serve` built from its own command line, run on a free 127.0.0.1 port, stopped at the end."""
    parser = argparse.ArgumentParser()
    serve_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args([
        "serve", "--model", str(model_dir), "--device", "cpu", "--max-batch-size", "4", "--batch-wait-ms", "150",
        "--allow-local-files", str(files[0]), "--image-generator", "synthetic", "--max-request-mb", "1",
        "--max-image-pixels", "1000000", "--max-tokens", "8", "--served-model-name", "tiny-mgm",
        "--log-level", "warning",
    ])  # fmt: skip
    uvicorn_server = serve_cli.build_server(args)
    with run_in_thread(uvicorn_server) as base:
        yield base, uvicorn_server.config.app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def engine_of(server):
    app = server[1]
    while not hasattr(app, "state"):  # unwrap uvicorn's middleware proxies
        app = app.app
    return app.state.engine


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["tiny-mgm"]
    health = httpx.get(server[0] + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-mgm" and health["max_batch_size"] == 4
    head = httpx.head(server[0] + "/health")  # monitors that ask with HEAD
    assert head.status_code == 200 and head.content == b""


def test_chat_completion_with_an_image_data_url(client, model_dir):
    red = solid((255, 0, 0))
    response = client.chat.completions.create(model="tiny-mgm", messages=ask("What is it?", data_url(red)))
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > 16  # 16 visual tokens + the text
    assert response.usage.completion_tokens <= 8  # the server's --max-tokens default
    # the same question through the Python API gives the same (greedy) answer
    assert choice.message.content == chat(str(model_dir), red, "What is it?", max_new_tokens=8)


def test_streaming_matches_the_plain_answer(client, server):
    messages = ask("Describe this", data_url(solid((255, 200, 0))))
    plain = client.chat.completions.create(model="tiny-mgm", messages=messages, max_tokens=6)
    stream = client.chat.completions.create(
        model="tiny-mgm", messages=messages, max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces).strip() == plain.choices[0].message.content
    assert len([p for p in pieces if p]) > 1  # token by token
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    # the raw event stream ends with data: [DONE]
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    with httpx.stream("POST", server[0] + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_concurrent_requests_are_batched(client, server):
    engine = engine_of(server)
    questions = ["Hi", "What is in the picture?", "Tell me more", "A longer question about the image"]
    images = [solid((255, 0, 0)), solid((0, 0, 255)), None, solid((0, 128, 0))]
    messages = [ask(q, data_url(i)) if i else ask(q) for q, i in zip(questions, images)]
    sequential = [client.chat.completions.create(model="m", messages=m, max_tokens=5) for m in messages]
    before = len(engine.batch_sizes)
    barrier = threading.Barrier(len(messages))
    results = [None] * len(messages)

    def send(index):
        barrier.wait()
        results[index] = client.chat.completions.create(model="m", messages=messages[index], max_tokens=5)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(messages))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    new_batches = list(engine.batch_sizes)[before:]
    assert sum(new_batches) == len(messages) and max(new_batches) > 1, new_batches
    # left-padded batched generation answers exactly what one-by-one generation does
    assert [r.choices[0].message.content for r in results] == [r.choices[0].message.content for r in sequential]


def test_image_generation_endpoint(client):
    result = client.images.generate(prompt="a red circle on a blue background", size="64x64")
    picture = decode_png(result.data[0].b64_json)
    assert picture.size == (64, 64)
    assert picture.getpixel((32, 32))[:3] == COLOURS["red"] and picture.getpixel((1, 1))[:3] == COLOURS["blue"]
    with pytest.raises(openai.BadRequestError, match="b64_json"):
        client.images.generate(prompt="a circle", response_format="url")


def test_chat_can_ask_for_a_picture(client, model_dir, monkeypatch):
    from minigemini import MiniGeminiProcessor

    script_answers(monkeypatch, MiniGeminiProcessor.from_pretrained(model_dir), "Sure <h>a green star</h>")
    response = client.chat.completions.create(
        model="m", messages=ask("Draw a star"), max_tokens=60, extra_body={"generate_image": True}
    )
    message = response.choices[0].message
    assert message.content == "Sure <h>a green star</h>"
    images = message.model_extra["images"]
    assert images[0]["prompt"] == "a green star" and images[0]["mime_type"] == "image/png"
    picture = decode_png(images[0]["b64_json"])
    assert picture.getpixel((picture.width // 2, picture.height // 2))[:3] == COLOURS["green"]


def test_local_files_only_inside_the_allowed_directory(client, files):
    root, outside = files
    for url in [str(root / "green.png"), (root / "green.png").as_uri(), "green.png"]:
        response = client.chat.completions.create(model="m", messages=ask("?", url), max_tokens=1)
        assert response.usage.prompt_tokens > 16
    for url in [str(outside / "blue.png"), f"{root}/../{outside.name}/blue.png", "/etc/passwd"]:
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="m", messages=ask("?", url), max_tokens=1)
        assert error.value.body["code"] == "local_files_not_allowed"
        assert "outside the directory" in error.value.body["message"]


def test_a_nul_byte_in_a_local_path_is_a_400(client, files):
    root, _ = files
    for url in ["ok\u0000.png", (root / "green.png").as_uri().replace("green", "green%00"), f"{root}/gr\u0000een.png"]:
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="m", messages=ask("?", url), max_tokens=1)
        assert error.value.body["code"] == "invalid_image_url" and "NUL byte" in error.value.body["message"], url


def test_bad_requests_get_a_clear_400(client, server):
    def refused(messages, **kwargs):
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="m", messages=messages, max_tokens=2, **kwargs)
        assert error.value.status_code == 400 and "Traceback" not in str(error.value.body)
        return error.value.body

    body = refused(ask("?", "data:image/png;base64,not*base64!"))
    assert body["code"] == "invalid_image_url" and "malformed base64" in body["message"]
    assert body["param"] == "messages[0].content[0].image_url"
    body = refused(ask("?", "data:image/png;base64," + base64.b64encode(b"hello, not an image").decode()))
    assert body["code"] == "invalid_image" and "not a recognised image" in body["message"]
    body = refused(ask("?", data_url(Image.new("RGB", (1200, 1000), "white"))))  # over --max-image-pixels
    assert body["code"] == "invalid_image" and "too large" in body["message"]
    body = refused(ask("?", "https://example.com/cat.png"))
    assert body["code"] == "remote_urls_not_allowed"
    body = refused(ask("<image> two placeholders, one image", data_url(solid((1, 2, 3)))))
    assert "2 <image> placeholder(s) but 1 image(s)" in body["message"]
    body = refused(ask("word " * 700))
    assert body["code"] == "context_length_exceeded" and "context is 512 tokens" in body["message"]
    assert "n must be 1" in refused(ask("hi"), n=2)["message"]
    body = refused([{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    assert "only user messages may carry images" in body["message"]

    url = server[0] + "/v1/chat/completions"
    response = httpx.post(url, content=b"{not json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = httpx.post(url, json={"model": "m"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    response = httpx.post(url, content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than this server's limit" in response.json()["error"]["message"]
    response = httpx.get(server[0] + "/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def test_local_files_are_refused_unless_allowed(model_dir, files):
    from fastapi.testclient import TestClient

    model, processor = load_pretrained(model_dir)
    app = create_app(model, processor)  # the defaults: no local files, no remote URLs
    with TestClient(app) as test_client:
        response = test_client.post("/v1/chat/completions", json={"messages": ask("?", str(files[0] / "green.png"))})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "local_files_not_allowed"
    assert "--allow-local-files" in response.json()["error"]["message"]


def test_remote_urls_only_when_allowed(model_dir):
    """--allow-remote-urls fetches http(s) images (here from a file server on 127.0.0.1), within the size limit."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from fastapi.testclient import TestClient

    root = model_dir.parent / "web-root"
    root.mkdir(exist_ok=True)
    solid((255, 0, 0)).save(root / "red.png")
    Image.new("RGB", (300, 300)).save(root / "big.bmp")  # 270 kB uncompressed
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    files_server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files_server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{files_server.server_address[1]}"
    model, processor = load_pretrained(model_dir)
    settings = ServerSettings(allow_remote_urls=True, max_image_bytes=100_000, default_max_tokens=2)
    try:
        with TestClient(create_app(model, processor, settings)) as test_client:
            ok = test_client.post("/v1/chat/completions", json={"messages": ask("?", f"{base}/red.png")})
            missing = test_client.post("/v1/chat/completions", json={"messages": ask("?", f"{base}/nope.png")})
            big = test_client.post("/v1/chat/completions", json={"messages": ask("?", f"{base}/big.bmp")})
    finally:
        files_server.shutdown()
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] > 16
    assert missing.status_code == 400 and "HTTP 404" in missing.json()["error"]["message"]
    assert big.status_code == 400 and big.json()["error"]["code"] == "image_too_large"


def test_every_bad_request_is_a_4xx_and_the_worker_survives(client, server):
    """Each refused request answers a 4xx in OpenAI's error shape (never a 5xx), and a good request still works."""
    url = server[0] + "/v1/chat/completions"
    good = {"messages": [{"role": "user", "content": "still alive?"}], "max_tokens": 2}
    json_type = {"content-type": "application/json"}
    pixel = data_url(solid((9, 9, 9), size=(4, 4)))
    not_an_image = base64.b64encode(b"%PDF-1.4 hello").decode()
    bad = {
        "malformed JSON": (400, {"content": b'{"messages": [', "headers": json_type}),
        "JSON array": (400, {"json": [good]}),
        "wrong content type": (415, {"content": json.dumps(good).encode(), "headers": {"content-type": "text/plain"}}),
        "form body": (415, {"data": {"messages": "hi"}}),
        "broken base64": (400, {"json": {"messages": ask("?", "data:image/png;base64,@@@")}}),
        "not base64 data URL": (400, {"json": {"messages": ask("?", "data:image/png,rawbytes")}}),
        "non-image data": (400, {"json": {"messages": ask("?", "data:image/png;base64," + not_an_image)}}),
        "too many pixels": (400, {"json": {"messages": ask("?", data_url(Image.new("RGB", (1100, 1000))))}}),
        "too many images": (400, {"json": {"messages": ask("?", *[pixel] * 9)}}),
        "over-long prompt": (400, {"json": {"messages": ask("word " * 700)}}),
        "max_tokens 0": (400, {"json": {**good, "max_tokens": 0}}),
        "max_tokens above the limit": (400, {"json": {**good, "max_tokens": 5000}}),
        "max_tokens not a number": (400, {"json": {**good, "max_tokens": "many"}}),
        "body too large": (413, {"content": b"x" * (2 << 20), "headers": json_type}),
    }
    for name, (status, request) in bad.items():
        response = httpx.post(url, timeout=60, **request)
        assert response.status_code == status, (name, response.status_code, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], (name, error)
        assert "Traceback" not in response.text, name
        after = httpx.post(url, json=good, timeout=60)
        assert after.status_code == 200 and after.json()["choices"][0]["message"]["role"] == "assistant", name
    assert httpx.post(url, json={**good, "max_tokens": 5000}).json()["error"]["code"] == "max_tokens_too_large"
    body = httpx.post(url, json={"messages": ask("?", *[pixel] * 9)}).json()
    assert body["error"]["code"] == "too_many_images"


def test_api_key_guards_v1_but_not_health(model_dir, monkeypatch):
    from fastapi.testclient import TestClient

    model, processor = load_pretrained(model_dir)
    settings = ServerSettings(api_key="s3cret", default_max_tokens=2)
    chat_body = {"messages": [{"role": "user", "content": "hi"}]}
    with TestClient(create_app(model, processor, settings)) as test_client:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}]:  # fmt: skip
            for method, path, kwargs in [("GET", "/v1/models", {}), ("POST", "/v1/chat/completions",
                                                                       {"json": chat_body})]:  # fmt: skip
                response = test_client.request(method, path, headers=headers, **kwargs)
                assert response.status_code == 401, (headers, path)
                error = response.json()["error"]
                assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
                assert response.headers["www-authenticate"] == "Bearer"
        assert test_client.get("/health").status_code == 200
        assert test_client.get("/openapi.json").json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        auth = {"Authorization": "Bearer s3cret"}
        assert test_client.get("/v1/models", headers=auth).status_code == 200
        response = test_client.post("/v1/chat/completions", json=chat_body, headers=auth)
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] <= 2
    # the openai client sends its api_key as the bearer token
    import openai

    transport_app = create_app(model, processor, settings)
    with TestClient(transport_app) as test_client:
        for key, ok in [("s3cret", True), ("nope", False)]:
            openai_client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, max_retries=0,
                                          http_client=test_client)  # fmt: skip
            if ok:
                assert openai_client.models.list().data[0].id == "minigemini"
            else:
                with pytest.raises(openai.AuthenticationError):
                    openai_client.models.list()
    # --api-key, or MGM_API_KEY when the option is absent
    parser = argparse.ArgumentParser()
    monkeypatch.setenv("MGM_API_KEY", "from-env")
    serve_cli.add_parser(parser.add_subparsers())
    assert parser.parse_args(["serve", "--model", "m"]).api_key == "from-env"
    assert parser.parse_args(["serve", "--model", "m", "--api-key", "flag"]).api_key == "flag"
    assert parser.parse_args(["serve", "--model", "m"]).max_queue == 64


def test_a_full_queue_answers_429_at_once(model_dir):
    """With --max-queue requests already waiting (the worker held back here), the next one gets 429, not a wait."""
    from fastapi.testclient import TestClient

    from minigemini.serve.batching import BatchingEngine, QueueFull

    model, processor = load_pretrained(model_dir)
    engine = BatchingEngine(model, processor, max_queue=2)
    engine.start = lambda: engine  # no worker: whatever is queued stays queued
    app = create_app(model, processor, ServerSettings(default_max_tokens=2), engine=engine)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with TestClient(app) as test_client:
        waiting = [engine.submit(object()) for _ in range(2)]
        start = time.monotonic()
        response = test_client.post("/v1/chat/completions", json=body)
        assert time.monotonic() - start < 10
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["type"] == "rate_limit_exceeded" and error["code"] == "queue_full"
        assert set(error) == {"message", "type", "param", "code"}
        with pytest.raises(QueueFull):
            engine.submit(object())
        health = test_client.get("/health").json()
        assert health["queued"] == 2 and health["max_queue"] == 2 and health["rejected"] >= 1
        engine._queue.clear()  # the queue drains: requests are taken again
        del waiting
        engine.start = BatchingEngine.start.__get__(engine)
        engine.start()
        response = test_client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
    with pytest.raises(ValueError, match="max_queue"):
        BatchingEngine(model, processor, max_queue=0)


def test_the_command_line_wires_the_limits_and_keeps_the_key_out_of_sight(model_dir, monkeypatch, capsys):
    """The hostile-client limits reach the app and uvicorn; MGM_API_KEY never shows in --help, and a key given on
    the command line (visible in ps) gets a warning."""
    import logging

    from uvicorn.protocols.http.h11_impl import H11Protocol

    for name in ("minigemini", "uvicorn", "uvicorn.error", "uvicorn.access"):  # build_server configures logging
        logger = logging.getLogger(name)
        for attribute in ("handlers", "level", "propagate"):
            monkeypatch.setattr(logger, attribute, list(logger.handlers) if attribute == "handlers" else
                                getattr(logger, attribute))  # fmt: skip
    monkeypatch.setenv("MGM_API_KEY", "env-secret-123")
    parser = argparse.ArgumentParser()
    serve_cli.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    assert "env-secret-123" not in help_text and "MGM_API_KEY" in help_text
    for flag in ("--max-request-pixels", "--decode-slots", "--max-queued-images", "--max-batch-images",
                 "--max-inflight-mb", "--header-timeout", "--body-timeout"):  # fmt: skip
        assert flag in help_text
    args = parser.parse_args([
        "serve", "--model", str(model_dir), "--device", "cpu", "--image-generator", "synthetic",
        "--max-request-pixels", "1000", "--decode-slots", "3", "--max-queued-images", "9", "--max-inflight-mb", "40",
        "--max-batch-images", "5",
        "--header-timeout", "3", "--body-timeout", "0", "--log-level", "info",
    ])  # fmt: skip
    server = serve_cli.build_server(args)
    out = capsys.readouterr().out
    assert "--api-key" not in out  # the key came from the environment
    assert "memory for requests, besides the model: decoding images <= " in out
    app = server.config.app
    settings = app.state.settings
    assert (settings.api_key, settings.max_request_pixels, settings.decode_slots, settings.max_queued_images,
            settings.max_inflight_bytes) == ("env-secret-123", 1000, 3, 9, 40 << 20)  # fmt: skip
    assert app.state.engine.max_queued_images == 9 and app.state.engine.max_batch_images == 5
    protocol = server.config.http
    assert issubclass(protocol, H11Protocol) and protocol is not H11Protocol
    assert server.config.log_config["loggers"]["minigemini"]["level"] == "INFO"
    args = parser.parse_args(["serve", "--model", str(model_dir), "--device", "cpu", "--image-generator", "synthetic",
                              "--api-key", "typed-in"])  # fmt: skip
    serve_cli.build_server(args)
    assert "--api-key is visible to every user of this machine (ps); set MGM_API_KEY instead" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--decode-slots"):
        serve_cli.build_server(parser.parse_args(["serve", "--model", str(model_dir), "--decode-slots", "0"]))
