"""`mgm serve`'s budgets: pixels per request (from the headers, before decoding), characters per prompt (before
tokenising), decode slots, queued images, request bodies held at once, and the memory figure they add up to."""

import asyncio
import base64
import io
import threading
import time

import httpx
import pytest
import torch

from minigemini.loading import load_pretrained
from minigemini.serve import images as serve_images
from minigemini.serve.app import create_app
from minigemini.serve.batching import BatchingEngine, QueueFull
from minigemini.serve.errors import APIError
from minigemini.serve.limits import (
    BODY_COPIES,
    BYTES_PER_DECODED_PIXEL,
    PixelBudget,
    character_limit,
    encoded_image_bytes,
    image_cost,
    memory_bound,
)
from minigemini.serve.middleware import BodyLimit
from minigemini.serve.settings import MiB, ServerSettings
from tests.helpers.serving import run_in_thread, save_tiny_mgm, solid


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def ask(text, *urls):
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"messages": [{"role": "user", "content": parts + [{"type": "text", "text": text}]}], "max_tokens": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_pretrained(save_tiny_mgm(tmp_path_factory.mktemp("mgm-limits")))


def test_an_image_costs_the_square_it_is_padded_to():
    assert image_cost(50_000, 1_000) == 2_500_000_000  # a 50 MP strip pads to a 2.5 GP square
    assert image_cost(50_000, 1_000, square=False) == 50_000_000
    assert image_cost(300, 300) == 90_000


def test_the_pixel_budget_refuses_the_image_that_exceeds_it():
    budget = PixelBudget(100)
    budget.add(8, 8, "a")
    budget.add(6, 2, "b")  # 64 + 36 = 100: exactly the budget
    with pytest.raises(APIError) as error:
        budget.add(1, 1, "messages[0].content[2].image_url")
    assert error.value.status == 400 and error.value.code == "too_many_pixels"
    assert error.value.param == "messages[0].content[2].image_url"
    assert "101 pixels" in error.value.message and "budget of 100 decoded pixels" in error.value.message
    assert budget.used == 100  # the refused image is not counted
    with pytest.raises(APIError, match="padded to a square, 100 pixels"):
        PixelBudget(99).add(10, 1, "x")
    PixelBudget(None).add(100_000, 100_000, "x")  # no budget


def test_the_character_bound_is_a_real_bound(tiny):
    """A text longer than the bound needs more tokens than the context holds, whatever it is made of."""
    _, processor = tiny
    tokenizer = processor.tokenizer
    context = 64
    limit = character_limit(context, tokenizer)
    longest = max(len(token) for token in tokenizer.get_vocab())
    assert limit == context * longest and character_limit(None, tokenizer) is None
    token_strings = sorted(tokenizer.get_vocab(), key=len)
    texts = ["word " * limit, "a" * (limit + 1), "\u00e9\u4e2d" * limit, (token_strings[-1] * (limit // longest + 1))]
    for text in texts:
        assert len(text) > limit
        assert len(tokenizer(text, add_special_tokens=False).input_ids) > context, text[:40]


def test_over_long_text_is_refused_before_it_is_tokenised(tiny, monkeypatch):
    from fastapi.testclient import TestClient

    model, processor = tiny
    calls = []
    original = type(processor).__call__
    monkeypatch.setattr(type(processor), "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    with TestClient(create_app(model, processor, ServerSettings(default_max_tokens=1))) as client:
        response = client.post("/v1/chat/completions", json=ask("x" * 1_000_000))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and "1,000,000 characters" in error["message"]
        assert "context of 512 tokens" in error["message"]
        assert calls == []  # never tokenised
        assert client.post("/v1/chat/completions", json=ask("hi")).status_code == 200
        assert calls == [1]


def test_the_pixel_budget_refuses_from_the_headers_before_decoding(tiny, monkeypatch):
    from fastapi.testclient import TestClient

    model, processor = tiny
    decoded = []
    original = serve_images.load_image
    monkeypatch.setattr(serve_images, "load_image", lambda raw, **k: decoded.append(1) or original(raw, **k))
    settings = ServerSettings(max_request_pixels=5_000, default_max_tokens=1)
    square = data_url(solid((200, 10, 10), size=(50, 50)))  # 2,500 pixels
    strip = data_url(solid((10, 200, 10), size=(400, 10)))  # 4,000 pixels, but a 400x400 square once padded
    with TestClient(create_app(model, processor, settings)) as client:
        assert client.post("/v1/chat/completions", json=ask("two", square, square)).status_code == 200
        assert len(decoded) == 2
        response = client.post("/v1/chat/completions", json=ask("three", square, square, square))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "too_many_pixels" and error["param"] == "messages[0].content[2].image_url"
        response = client.post("/v1/chat/completions", json=ask("strip", strip))
        assert (
            response.status_code == 400 and "padded to a square, 160,000 pixels" in response.json()["error"]["message"]
        )
        assert len(decoded) == 2  # neither refused request decoded a single image
        assert client.get("/health").json()["queued"] == 0


@pytest.mark.parametrize("slots", [1, 2])
def test_decoding_takes_a_slot(tiny, monkeypatch, slots):
    """Concurrent image requests decode at most ``decode_slots`` at a time (and that many do overlap)."""
    import uvicorn

    model, processor = tiny
    active, peak, lock = [0], [0], threading.Lock()
    original = serve_images.ImageFetcher.decode

    def slow_decode(self, raw, param):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        try:
            return original(self, raw, param)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(serve_images.ImageFetcher, "decode", slow_decode)
    app = create_app(model, processor, ServerSettings(decode_slots=slots, default_max_tokens=1), batch_wait=0)
    statuses, barrier = [], threading.Barrier(4)
    with run_in_thread(uvicorn.Server(uvicorn.Config(app, log_level="warning"))) as base:

        def one(index):
            body = ask(f"question {index}", data_url(solid((index * 40, 0, 0))))
            barrier.wait(30)
            statuses.append(httpx.post(base + "/v1/chat/completions", json=body, timeout=60).status_code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert statuses == [200] * 4
    assert peak[0] == slots


class Waiting:
    """A queued request carrying ``n`` images (what the engine's bookkeeping looks at)."""

    def __init__(self, n):
        self.inputs = {"pixel_values": torch.zeros(n, 3, 2, 2)}
        self.cancelled = threading.Event()
        self.prompt_length, self.max_new_tokens = 4, 4

    def sampling_key(self):
        return (False,)


def test_the_queue_holds_a_bounded_number_of_images(tiny):
    model, processor = tiny

    engine = BatchingEngine(model, processor, max_queue=10, max_queued_images=3)  # no worker: jobs stay queued
    first = engine.submit(Waiting(2))
    assert engine.queued_images() == 2
    engine.check(images=1)  # it would be queued
    with pytest.raises(QueueFull, match="2 images are already waiting and this request brings 2"):
        engine.check(images=2)
    with pytest.raises(QueueFull, match="the limit is 3"):
        engine.submit(Waiting(2))
    engine.submit(Waiting(1))
    engine.cancel(first)  # a cancelled job leaves the queue and gives its images back
    assert engine.queued_images() == 1 and engine.pending() == 1 and engine.cancelled == 1
    engine.submit(Waiting(2))
    with pytest.raises(ValueError, match="max_queued_images"):
        BatchingEngine(model, processor, max_queued_images=0)
    with pytest.raises(ValueError, match="at least max_images"):
        ServerSettings(max_images=8, max_queued_images=4)


def test_a_batch_takes_a_bounded_number_of_images(tiny):
    """The vision encoders see a batch's images at once: a batch stops at max_batch_images (its first request goes
    in whatever it holds)."""
    model, processor = tiny
    engine = BatchingEngine(model, processor, batch_wait=0, max_batch_size=8, max_batch_images=10)
    jobs = [engine.submit(Waiting(n)) for n in (12, 8, 1, 2)]
    assert engine._take_batch() == jobs[:1]  # 12 images: alone, but taken
    assert engine._take_batch() == [jobs[1], jobs[2]]  # 8 + 1; the 2-image one would make 11
    assert engine._take_batch() == [jobs[3]] and engine.queued_images() == 0
    with pytest.raises(ValueError, match="max_batch_images"):
        BatchingEngine(model, processor, max_batch_images=0)


def test_request_bodies_held_at_once_are_bounded():
    """BodyLimit's total: while one request holds its body, another that would go beyond the total gets 429."""
    release = asyncio.Event()
    seen = []

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(len(body))
        if scope["path"] == "/hold":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = BodyLimit(app, limit=100, total=150)

    async def call(path, body, declared=True):
        sent, chunks = [], [{"type": "http.request", "body": body, "more_body": False}]
        headers = [(b"content-length", str(len(body)).encode())] if declared else []

        async def receive():
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        try:
            await limited({"type": "http", "path": path, "headers": headers}, receive, send)
        except APIError as error:  # raised inside receive: the app's exception handler answers it
            return error.status
        return sent[0]["status"]

    async def scenario():
        holder = asyncio.ensure_future(call("/hold", b"x" * 100))
        while limited.held < 100:
            await asyncio.sleep(0.01)
        busy = await call("/", b"y" * 60)  # 100 + 60 > 150, refused from its content-length
        streamed = await call("/", b"y" * 60, declared=False)  # refused while reading
        fits = await call("/", b"z" * 50)  # 100 + 50 = 150 fits
        release.set()
        assert await holder == 200
        after = await call("/", b"y" * 60)
        return busy, streamed, fits, after

    assert asyncio.run(scenario()) == (429, 429, 200, 200)
    assert limited.held == 0 and seen == [100, 50, 60]
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        ServerSettings(max_request_bytes=32 * MiB, max_inflight_bytes=MiB)


def test_the_memory_figure_adds_up_the_bounds(tiny):
    _, processor = tiny
    settings = ServerSettings(max_request_pixels=1_000_000, decode_slots=3, max_queued_images=10, max_images=4,
                              max_batch_images=6, max_inflight_bytes=64 * MiB)  # fmt: skip
    image_processor = processor.image_processor
    per_image = 4 * 3 * (image_processor.image_size_aux**2 + image_processor.num_views * image_processor.image_size**2)
    assert encoded_image_bytes(image_processor) == per_image
    assert memory_bound(settings, image_processor) == {
        "decoding": 3 * 1_000_000 * BYTES_PER_DECODED_PIXEL,
        "encoded": (10 + 2 * 6) * per_image,  # the running batch is held twice: per request and collated
        "bodies": BODY_COPIES * 64 * MiB,
    }
    unbounded = ServerSettings(max_request_pixels=None, max_queued_images=None, max_inflight_bytes=None)
    assert set(memory_bound(unbounded, image_processor).values()) == {None}


def test_release_sized_defaults_fit_a_24_gib_machine():
    """The defaults' figure for a release HD model (HR 1536, 5 views of 336) leaves 19 of 24 GiB to the model."""
    from minigemini.image_processing import MiniGeminiImageProcessor

    hd = MiniGeminiImageProcessor(image_size=336, image_size_aux=1536, image_grid=2, image_global=True)
    bounds = memory_bound(ServerSettings(), hd)
    assert all(value is not None for value in bounds.values())
    assert sum(bounds.values()) < 5 * (1 << 30), bounds
