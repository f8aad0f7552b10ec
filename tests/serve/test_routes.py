"""The routes of `mgm serve` are module-level handlers on one APIRouter: each can be mounted and tested alone, on a bare
FastAPI app with a hand-made ``ServerState``."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from minigemini.loading import load_pretrained
from minigemini.serve import routes
from minigemini.serve.batching import BatchingEngine
from minigemini.serve.settings import ServerSettings
from minigemini.serve.state import ServerState
from tests.helpers.serving import save_tiny_mgm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_pretrained(save_tiny_mgm(tmp_path_factory.mktemp("mgm-routes")))


def test_every_route_is_a_module_level_handler():
    paths = {route.path: route.endpoint for route in routes.router.routes}
    assert set(paths) == {"/health", "/v1/models", "/v1/chat/completions", "/v1/images/generations"}
    for path, endpoint in paths.items():
        assert "<locals>" not in endpoint.__qualname__, path
        assert getattr(routes, endpoint.__name__) is endpoint, path


def test_a_route_runs_alone_on_its_state(tiny):
    model, processor = tiny
    app = FastAPI()
    app.include_router(routes.router)
    engine = BatchingEngine(model, processor, max_queue=3)
    app.state.server = ServerState(model, processor, ServerSettings(model_name="alone"), engine)
    with TestClient(app) as client:  # no lifespan: the engine is never started, and these routes need no worker
        assert client.get("/v1/models").json()["data"][0]["id"] == "alone"
        assert client.get("/health").json()["max_queue"] == 3
