"""The batched, streamed generation engine under chat, serve and web."""

import pytest
import torch

from minigemini.engine import GenerationRequest, context_budget, run_batch
from minigemini.inference import Conversation
from minigemini.loading import load_pretrained
from tests.helpers.serving import save_tiny_mgm, script_answers, solid


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = save_tiny_mgm(tmp_path_factory.mktemp("mgm"))
    return load_pretrained(path)


def encode(processor, text, images=()):
    conversation = Conversation()
    conversation.add_user(text, images)
    return conversation.encode(processor)


def test_streamed_pieces_make_the_answer_and_stop_strings_never_leak(tiny, monkeypatch):
    model, processor = tiny
    script_answers(monkeypatch, processor, "Hello there STOP and more")
    pieces = []
    request = GenerationRequest(encode(processor, "hi"), max_new_tokens=30, stop=["STOP"], on_text=pieces.append)
    run_batch(model, processor, [request])
    assert request.text == "Hello there" and request.finish_reason == "stop"
    assert "".join(pieces).strip() == "Hello there"
    assert len(pieces) > 1  # streamed token by token, not in one piece
    assert not any("S" in piece for piece in pieces)  # the held-back prefix of STOP was never shown


def test_rows_of_a_batch_stop_on_their_own_budget(tiny, monkeypatch):
    model, processor = tiny
    script_answers(monkeypatch, processor, "one two three four five six seven eight")
    short = GenerationRequest(encode(processor, "a"), max_new_tokens=2)
    long = GenerationRequest(encode(processor, "a much longer question here", [solid((0, 0, 255))]), max_new_tokens=6)
    run_batch(model, processor, [short, long])
    assert (short.completion_tokens, short.finish_reason) == (2, "length")
    assert (long.completion_tokens, long.finish_reason) == (6, "length")
    assert long.text.startswith(short.text)


def test_end_of_sequence_finishes_with_stop(tiny, monkeypatch):
    model, processor = tiny
    script_answers(monkeypatch, processor, "Short answer.")
    request = GenerationRequest(encode(processor, "q"), max_new_tokens=40)
    run_batch(model, processor, [request])
    assert request.text == "Short answer." and request.finish_reason == "stop"
    assert request.completion_tokens == len(processor.tokenizer.encode("Short answer.", add_special_tokens=False))


def test_batched_generation_equals_one_by_one(tiny):
    model, processor = tiny
    samples = [("What is this?", [solid((255, 0, 0))]), ("hi", []), ("Compare them please", [solid((0, 255, 0))] * 2)]

    def requests():
        return [GenerationRequest(encode(processor, text, images), max_new_tokens=5) for text, images in samples]

    batched = run_batch(model, processor, requests())
    alone = [run_batch(model, processor, [r])[0] for r in requests()]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert all(r.completion_tokens == 5 for r in batched)


def test_cancelled_row_stops_early(tiny):
    model, processor = tiny
    request = GenerationRequest(encode(processor, "hi"), max_new_tokens=50)
    request.on_text = lambda piece: request.cancelled.set()
    other = GenerationRequest(encode(processor, "hello"), max_new_tokens=8)
    run_batch(model, processor, [request, other])
    assert request.finish_reason == "cancelled" and request.completion_tokens <= 3
    assert other.completion_tokens == 8


def test_mixed_sampling_settings_are_refused_in_one_batch(tiny):
    model, processor = tiny
    greedy = GenerationRequest(encode(processor, "a"), max_new_tokens=2)
    sampled = GenerationRequest(encode(processor, "a"), max_new_tokens=2, temperature=0.7)
    with pytest.raises(ValueError, match="share sampling settings"):
        run_batch(model, processor, [greedy, sampled])
    torch.manual_seed(0)
    run_batch(model, processor, [sampled])
    assert sampled.completion_tokens == 2


def test_context_budget(tiny):
    model, _ = tiny
    assert context_budget(model, 100, 64) == 64
    assert context_budget(model, 500, 64) == 12  # the tiny model's context is 512 tokens
    with pytest.raises(ValueError, match="context is 512 tokens"):
        context_budget(model, 512, 10)
