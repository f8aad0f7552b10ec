"""`mgm serve` under load and under fuzzing, on loopback: 50 concurrent clients, then schemathesis over /openapi.json.

Both are bounded: a tiny model, a few tokens per answer, a fixed number of requests and examples, timeouts on every
request.  Run alone with ``pytest -q -s tests/test_serve_load.py`` to see the latency percentiles.
"""

import contextlib
import math
import threading
import time

import httpx
import pytest

from minigemini.loading import load_pretrained
from minigemini.serve.app import create_app
from minigemini.serve.settings import ServerSettings
from tests.helpers.serving import run_in_thread, save_tiny_mgm

CLIENTS = 50
REQUEST_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def loopback_server(tmp_path_factory):
    """create_app on a free 127.0.0.1 port (uvicorn in a thread): answers of at most 4 tokens, batches of up to 8."""
    from minigemini.text_to_image import load_text_to_image

    model, processor = load_pretrained(save_tiny_mgm(tmp_path_factory.mktemp("mgm-load")))
    settings = ServerSettings(model_name="tiny-mgm", default_max_tokens=4, max_tokens_limit=8,
                                           max_images=2, max_request_bytes=1 << 20, max_queue=64)  # fmt: skip
    app = create_app(model, processor, settings, image_generator=load_text_to_image("synthetic"),
                                  max_batch_size=8, batch_wait=0.05)  # fmt: skip
    with serving(app) as base:
        yield base, app


@contextlib.contextmanager
def serving(app):
    """Run ``app`` with uvicorn in a thread on a free 127.0.0.1 port; yields the base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", log_level="warning", timeout_keep_alive=30)
    with run_in_thread(uvicorn.Server(config)) as base:
        yield base


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_fifty_concurrent_clients(loopback_server):
    base, app = loopback_server
    engine = app.state.engine
    before = len(engine.batch_sizes)
    barrier = threading.Barrier(CLIENTS)
    latencies: list[float | None] = [None] * CLIENTS
    errors: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT, limits=limits) as http:

        def one(index: int) -> None:
            body = {"model": "tiny-mgm", "max_tokens": 4,
                    "messages": [{"role": "user", "content": f"Question number {index}?"}]}  # fmt: skip
            try:
                barrier.wait(30)
                start = time.perf_counter()
                response = http.post("/v1/chat/completions", json=body)
                elapsed = time.perf_counter() - start
                if response.status_code != 200:
                    errors.append(f"{index}: HTTP {response.status_code} {response.text[:200]}")
                    return
                answer = response.json()
                assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] <= 4
                latencies[index] = elapsed
            except Exception as error:  # noqa: BLE001 -- every failure is reported below
                errors.append(f"{index}: {type(error).__name__}: {error}")

        started = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(1.0, started + REQUEST_TIMEOUT + 30 - time.perf_counter()))
        wall = time.perf_counter() - started

    assert not any(thread.is_alive() for thread in threads), "some clients did not finish in time"
    assert not errors, errors
    done = [value for value in latencies if value is not None]
    assert len(done) == CLIENTS
    p50, p90, p99 = (percentile(done, q) for q in (50, 90, 99))
    batches = list(engine.batch_sizes)[before:]
    print(f"\n{CLIENTS} concurrent requests (max_tokens=4) in {wall:.2f} s: latency p50 {p50 * 1000:.0f} ms, "
          f"p90 {p90 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(done) * 1000:.0f} ms; "
          f"{len(batches)} batches, sizes {batches}")  # fmt: skip
    assert all(math.isfinite(v) and v > 0 for v in (p50, p90, p99))
    assert p50 <= p90 <= p99 <= max(done)
    assert sum(batches) == CLIENTS and max(batches) > 1, batches  # the engine batched
    assert engine.pending() == 0 and engine.rejected == 0
    # the server is still healthy afterwards
    assert httpx.get(base + "/health", timeout=10).json()["queued"] == 0


def test_overload_gets_429_not_a_hang(loopback_server):
    """More concurrent clients than --max-queue + batch: the overflow gets 429 at once, the rest are answered."""
    _, loaded = loopback_server
    model, processor = loaded.state.engine.model, loaded.state.engine.processor
    settings = ServerSettings(default_max_tokens=4, max_tokens_limit=8, max_queue=2)
    app = create_app(model, processor, settings, max_batch_size=1, batch_wait=0.2)
    clients = 16
    statuses: list[int] = []
    barrier = threading.Barrier(clients)
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    with serving(app) as base, httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT,
                                            limits=httpx.Limits(max_connections=clients)) as http:  # fmt: skip

        def one() -> None:
            barrier.wait(30)
            response = http.post("/v1/chat/completions", json=body)
            if response.status_code == 429:
                assert response.json()["error"]["type"] == "rate_limit_exceeded"
            statuses.append(response.status_code)

        threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT)
        assert len(statuses) == clients and set(statuses) <= {200, 429}, statuses
        assert 0 < statuses.count(429) < clients and statuses.count(200) >= 1, statuses
        assert app.state.engine.rejected >= 1
        assert http.post("/v1/chat/completions", json=body).status_code == 200  # the queue drained


# ------------------------------------------------------------------------------------------------ fuzzing

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

FUZZ_EXAMPLES = 20  # per operation and mode


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_openapi_fuzz_finds_no_server_error(loopback_server, mode):
    """Every operation of the server's own /openapi.json, with schema-shaped (positive) and mis-shaped (negative)
    inputs: never a 5xx, and the worker still answers a good request afterwards."""
    base, _ = loopback_server
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/images/generations"}
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not operation.body:
            continue  # nothing to get wrong in a parameterless GET

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=FUZZ_EXAMPLES, deadline=30_000, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)  # fmt: skip
        def fuzz(case):
            case.call_and_validate(checks=[not_a_server_error], timeout=REQUEST_TIMEOUT)

        fuzz()
    good = {"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 2}
    assert httpx.post(base + "/v1/chat/completions", json=good, timeout=REQUEST_TIMEOUT).status_code == 200


def test_the_schema_describes_the_request_bodies(loopback_server):
    schema = httpx.get(loopback_server[0] + "/openapi.json", timeout=10).json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")
    assert "messages" in schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"/health", "/v1/models", "/v1/images/generations"} <= set(schema["paths"])
