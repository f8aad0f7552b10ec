"""The lmms-eval adapter, against the real lmms-eval (skipped when it is not installed): discovery through
the `lmms_eval.models` entry-point group, and `generate_until` answering like `generate_answers`."""

import ast
from pathlib import Path

import pytest
from PIL import Image

from tests.evaluation.eval_helpers import build_checkpoint, one_torch_thread

ENTRY_POINT = "minigemini = minigemini.evaluation.lmms_adapter:lmms_eval_manifest"


def test_only_the_adapter_imports_lmms_eval():
    package = Path(__file__).resolve().parents[2] / "minigemini"
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "lmms_eval" for name in names):
                importers.add(path.name)
    assert importers == {"lmms_adapter.py"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module", autouse=True)
def _pil_truncation_policy():
    """lmms-eval turns on PIL's LOAD_TRUNCATED_IMAGES for the whole process when its tasks are imported (some of its
    datasets hold truncated images); put it back for the tests that run after these (their loaders refuse them)."""
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = before


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("mgm-tiny"))


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """Install-time metadata declaring the entry point (what pip writes from pyproject.toml)."""
    import lmms_eval.api.model  # noqa: F401  (the real lmms-eval; CI installs it)

    dist = tmp_path / "minigemini_entrypoint_probe-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: minigemini-entrypoint-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[lmms_eval.models]\n{ENTRY_POINT}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_lmms_eval_finds_the_model_through_its_entry_point(registered):
    import lmms_eval.models
    from lmms_eval.api.model import lmms

    from minigemini.evaluation.lmms_adapter import MiniGeminiLMMS

    registry = lmms_eval.models._initialize_model_registry()  # what `import lmms_eval.models` builds
    assert registry.get_model_class("minigemini") is MiniGeminiLMMS
    assert registry.get_model_class("mgm") is MiniGeminiLMMS
    assert issubclass(MiniGeminiLMMS, lmms) and MiniGeminiLMMS.is_simple


def test_generate_until_matches_generate_answers(registered, tiny_checkpoint):
    from lmms_eval.api.instance import Instance

    from minigemini.evaluation.answering import generate_answers
    from minigemini.evaluation.lmms_adapter import MiniGeminiLMMS

    model = MiniGeminiLMMS.create_from_arg_string(
        f"pretrained={tiny_checkpoint},batch_size=2,max_new_tokens=3,device=cpu"
    )
    docs = [
        {"image": Image.new("RGB", (20, 14), (40 * i, 120, 200)), "q": f"What colour is picture {i}?"} for i in range(3)
    ]
    model.task_dict = {"toy": {"test": docs}}

    def doc_to_visual(doc):
        return [doc["image"]]

    gen_kwargs = [
        {"max_new_tokens": 3, "until": ["\n\n"]},
        {"max_new_tokens": 2, "until": "ASSISTANT"},
        {"max_new_tokens": 3, "until": ["\n\n"], "temperature": 0},
    ]
    requests = [
        Instance(
            "generate_until",
            (f"<image>\n{doc['q']}", gen_kwargs[i], doc_to_visual, i, "toy", "test"),
            idx=0,
            metadata={"task": "toy", "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(docs)
    ]
    answers = model.generate_until(requests)
    expected = [
        generate_answers(
            model.model,
            model.processor,
            [([doc["image"]], doc["q"])],
            max_new_tokens=kw["max_new_tokens"],
            stop=[kw["until"]] if isinstance(kw["until"], str) else kw["until"],
        )[0]
        for doc, kw in zip(docs, gen_kwargs)
    ]
    assert answers == expected
    with pytest.raises(NotImplementedError):
        model.loglikelihood(requests)


def test_vllm_prefixed_model_args_go_to_vllm_only(registered, tiny_checkpoint):
    """`vllm_KEY=VALUE` reaches `vllm.LLM` with engine=vllm (its run: tests/evaluation/test_lmms_task.py); another
    engine lists it among the arguments it ignored."""
    from minigemini.evaluation.lmms_adapter import MiniGeminiLMMS, vllm_arguments

    parsed = {"vllm_enforce_eager": True, "vllm_max_model_len": 512, "seed": 3}
    assert vllm_arguments(parsed) == {"enforce_eager": True, "max_model_len": 512}
    model = MiniGeminiLMMS.create_from_arg_string(
        f"pretrained={tiny_checkpoint},device=cpu,vllm_enforce_eager=true,seed=3"
    )
    assert model.engine.name == "transformers"
    assert model.ignored_arguments == ["seed", "vllm_enforce_eager"]


def test_building_the_model_disarms_lmms_evals_filelock3_patch(registered, tiny_checkpoint):
    """lmms-eval 0.7.3 patches filelock 3's private `filelock._api` in `simple_evaluate`, after building the model;
    under filelock 4 the model marks that patch done, or every run would stop there."""
    import importlib.util

    from lmms_eval import evaluator

    from minigemini.evaluation.lmms_adapter import MiniGeminiLMMS

    MiniGeminiLMMS.create_from_arg_string(f"pretrained={tiny_checkpoint},device=cpu")
    if importlib.util.find_spec("filelock._api") is None:
        assert evaluator._enable_reentrant_filelocks._patched is True
    evaluator._enable_reentrant_filelocks()  # what simple_evaluate calls next: no error


def test_the_adapter_answers_through_an_endpoint_as_through_transformers(registered, tiny_checkpoint):
    """`--model_args endpoint=URL`: a real `mgm serve` on 127.0.0.1 answers lmms-eval's requests as the
    transformers engine does."""
    import uvicorn
    from lmms_eval.api.instance import Instance

    from minigemini.evaluation.lmms_adapter import MiniGeminiLMMS
    from minigemini.serve.app import create_app
    from minigemini.serve.settings import ServerSettings
    from tests.helpers.serving import run_in_thread

    local = MiniGeminiLMMS.create_from_arg_string(
        f"pretrained={tiny_checkpoint},max_new_tokens=4,device=cpu,dtype=fp32"
    )
    docs = [
        {"image": Image.new("RGB", (20, 14), (60 * i, 90, 30)), "q": f"What shape is in picture {i}?"} for i in range(3)
    ]
    requests = [
        Instance(
            "generate_until",
            (f"<image>\n{doc['q']}", {"until": ["\n\n"]}, lambda doc: [doc["image"]], i, "toy", "test"),
            idx=0,
            metadata={"task": "toy", "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(docs)
    ]
    local.task_dict = {"toy": {"test": docs}}
    expected = local.generate_until(requests)
    app = create_app(local.model, local.processor, ServerSettings(), batch_wait=0)
    with run_in_thread(uvicorn.Server(uvicorn.Config(app, log_config=None))) as base:
        remote = MiniGeminiLMMS.create_from_arg_string(f"endpoint={base},concurrency=2,max_new_tokens=4")
        remote.task_dict = local.task_dict
        assert remote.engine.name == "endpoint" and remote.batch_size == 8
        assert remote.generate_until(requests) == expected
        remote.engine.close()
