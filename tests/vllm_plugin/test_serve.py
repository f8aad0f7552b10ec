"""vLLM's OpenAI-compatible server (vLLM's CPU build, in its own environment) serves the default model, exported as
one checkpoint by `mgm export-default`: the `openai` client gets, for a data-URL image, the answer `mgm.chat` gives,
streamed or not; a broken image is a 400 and the engine goes on answering."""

import openai
import pytest

import minigemini as mgm
from minigemini.cli import main
from minigemini.cli.demo import bundled_image_path
from minigemini.loading import load_pretrained
from tests.helpers.vllm_env import data_url, vllm_server

QUESTION = "Describe the image."
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vllm-serve") / "default-mgm"
    assert main(["export-default", "--output", str(directory)]) == 0
    return directory


@pytest.fixture(scope="module")
def client(exported):
    log = exported.parent / "vllm-server.log"
    arguments = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--served-model-name", "mgm"]
    with vllm_server(exported, log, *arguments) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client, image_url: str, **options):
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": QUESTION}]}]  # fmt: skip
    return client.chat.completions.create(
        model="mgm", messages=messages, max_tokens=MAX_TOKENS, temperature=0, **options
    )


@pytest.fixture(scope="module")
def mgm_answer(exported):
    model, processor = load_pretrained(str(exported), device="cpu", dtype="fp32")
    return mgm.chat(model, bundled_image_path(), QUESTION, processor, max_new_tokens=MAX_TOKENS)


def test_vllm_serve_answers_a_data_url_image_as_mgm_does(client, mgm_answer):
    reply = ask(client, data_url(bundled_image_path()))
    assert reply.choices[0].message.content == mgm_answer
    assert reply.usage.prompt_tokens > 64  # the image's 64 visual tokens are in the prompt


def test_streaming_gives_the_same_answer_in_pieces(client, mgm_answer):
    pieces = [chunk.choices[0].delta.content or "" for chunk in ask(client, data_url(bundled_image_path()), stream=True)
              if chunk.choices]  # fmt: skip
    assert len([piece for piece in pieces if piece]) > 1
    assert "".join(pieces) == mgm_answer


def test_a_broken_image_is_a_400_and_the_engine_goes_on(client, mgm_answer):
    with pytest.raises(openai.BadRequestError) as raised:
        ask(client, "data:image/png;base64," + "aGVsbG8gd29ybGQ=")  # "hello world" is no PNG
    assert raised.value.status_code == 400 and "image" in str(raised.value).lower()
    assert ask(client, data_url(bundled_image_path())).choices[0].message.content == mgm_answer
