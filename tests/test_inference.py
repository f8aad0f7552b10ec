"""The Python API: the chat one-liner, batched inference, loading defaults, release checkpoints on load."""

import pytest
import torch

from minigemini import loading, precision
from minigemini.engine import ContextTooLong
from minigemini.errors import UserError
from minigemini.inference import Conversation, batch_chat, chat, draw
from minigemini.loading import load_pretrained, parse_dtype, resolve_device
from tests.helpers.serving import save_tiny_mgm, solid


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_mgm(tmp_path_factory.mktemp("mgm"))


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_pretrained(model_dir)


# ------------------------------------------------------------------------------------------- Python API


def test_chat_one_liner_from_a_directory_or_a_loaded_model(model_dir, loaded):
    model, processor = loaded
    from_path = chat(str(model_dir), solid((255, 0, 0)), "What colour is this?", max_new_tokens=6)
    from_model = chat(model, solid((255, 0, 0)), "What colour is this?", processor, max_new_tokens=6)
    assert isinstance(from_path, str) and from_path and from_path == from_model
    # the model remembers where it came from, so the processor is found without being passed
    assert chat(model, solid((255, 0, 0)), "What colour is this?", max_new_tokens=6) == from_model
    assert isinstance(chat(model, None, "Hello", processor, max_new_tokens=3), str)  # text only


def test_batch_chat_keeps_input_order_and_matches_single_answers(loaded, capsys):
    model, processor = loaded
    pairs = [
        (solid((255, 0, 0)), "What colour is this picture?"),
        (None, "Hi"),
        ([solid((0, 0, 255)), solid((0, 255, 0))], "Which one is greener?"),
        (solid((9, 9, 9)), "Dark?"),
        (None, "A longer question without any image at all"),
    ]
    answers = batch_chat(model, pairs, processor, batch_size=2, max_new_tokens=5, progress=True)
    singles = [chat(model, image, question, processor, max_new_tokens=5) for image, question in pairs]
    assert answers == singles
    assert "5/5" in capsys.readouterr().err  # the tqdm bar


def test_one_chat_turn_ocr_then_gen_then_the_request(loaded, monkeypatch):
    """The turn every front end builds: each image loaded, read by OCR, kept (one after another); the hint, then
    <GEN>; then the request within the context; then the picture of the answer's <h> prompt."""
    from minigemini import ocr

    model, processor = loaded
    seen = []
    monkeypatch.setattr(ocr, "ocr_tokens", lambda picture: seen.append(("ocr", picture)) or [f"t{picture}"])
    conversation = Conversation(system="Be brief.")
    load = lambda image: seen.append(("load", image)) or image * 10
    keep = lambda picture: seen.append(("keep", picture)) or solid((picture, 0, 0))
    hint = conversation.add_user("What is written?", [1, 2], ocr=True, generate_image=True, load=load, keep=keep)
    assert hint == "Reference OCR token: t10, t20"
    assert seen == [("load", 1), ("ocr", 10), ("keep", 10), ("load", 2), ("ocr", 20), ("keep", 20)]
    assert conversation.messages[-1]["content"].endswith("What is written?\nReference OCR token: t10, t20 <GEN>")
    assert [image.getpixel((0, 0)) for image in conversation.images] == [(10, 0, 0), (20, 0, 0)]
    request = conversation.request(model, processor, max_new_tokens=5, temperature=0.5, stop=["x"])
    assert request.inputs["pixel_values"].shape[0] == 2 and request.max_new_tokens == 5
    assert (request.temperature, request.top_p, list(request.stop)) == (0.5, 1.0, ["x"])
    assert conversation.add_user("no images", ocr=True) == ""  # nothing to read: no hint
    with pytest.raises(ContextTooLong):
        conversation.add_user("word " * 5000)
        conversation.request(model, processor)
    drawn = []
    assert draw("Sure <h>a red fox</h>", lambda prompt, **options: drawn.append(options) or prompt.upper(), seed=3) == (
        "a red fox",
        "A RED FOX",
    )
    assert drawn == [{"seed": 3}] and draw("no prompt", str.upper) == (None, None)
    assert draw("<h>a fox</h>", None) == ("a fox", None)


def test_batch_chat_bad_image(loaded, tmp_path):
    model, processor = loaded
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    pairs = [(solid((255, 0, 0)), "ok?"), (bad, "and this?")]
    with pytest.raises(ValueError, match=r"pair 1: .*broken.png"):
        batch_chat(model, pairs, processor, max_new_tokens=2, progress=False)
    answers = batch_chat(model, pairs, processor, max_new_tokens=2, progress=False, errors="skip")
    assert isinstance(answers[0], str) and answers[1] is None


def test_device_and_dtype_defaults(model_dir, monkeypatch):
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    for fast, dtype in ((True, torch.bfloat16), (False, torch.float32)):  # bf16 only where the CPU has its kernels
        monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert loading.default_dtype(torch.device("cpu")) == dtype
    assert loading.default_dtype(torch.device("mps")) == torch.float16
    assert parse_dtype("bf16") == torch.bfloat16 and parse_dtype("auto") is None
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_dtype("fp8")
    model, _ = load_pretrained(model_dir, device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="quantization fp8 runs on cuda, not cpu"):  # nf4 and int8 run on a CPU
        load_pretrained(model_dir, device="cpu", quantization="fp8")


# ------------------------------------------------------------------------------------------- mgm chat


def test_a_published_release_checkpoint_loads_for_chat(tmp_path):
    """`mgm chat --model <a YanweiLi/MGM-* download>` works: the release layout is converted on load."""
    from tests.helpers import tiny_release

    tiny_release.make_release(tmp_path / "release", "llama")
    model, processor = load_pretrained(tmp_path / "release")
    assert processor.template_name == "vicuna_v1"
    answer = chat(model, solid((255, 0, 0)), "What is it?", processor, max_new_tokens=3)
    assert isinstance(answer, str)


def test_a_processor_or_a_model_is_an_object_or_a_directory_everywhere(model_dir, loaded, tmp_path):
    """chat, batch_chat, Conversation, the engine and the evaluation's generation take a processor as an object or a
    directory; anything else is refused with one line naming the argument."""
    from minigemini.engine import GenerationRequest, run_batch
    from minigemini.errors import UserError
    from minigemini.evaluation import generate_answers
    from minigemini.inference import Conversation

    model, processor = loaded
    image, question = solid((0, 0, 255)), "What colour is this?"
    expected = chat(model, image, question, processor, max_new_tokens=4)
    for given in (str(model_dir), model_dir):
        assert chat(model, image, question, processor=given, max_new_tokens=4) == expected
        assert batch_chat(model, [(image, question)], given, max_new_tokens=4, progress=False) == [expected]
        conversation = Conversation()
        conversation.add_user(question, [image])
        [request] = run_batch(model, given, [GenerationRequest(conversation.encode(given), max_new_tokens=4)])
        assert request.text == expected
        assert generate_answers(model, given, [(image, question)], max_new_tokens=4) == [expected]
    refusals = [
        (lambda: chat(model, image, question, processor=42), "processor must be a MiniGeminiProcessor or a directory"),
        (lambda: chat(model, image, question, processor=str(tmp_path)), f"processor: {tmp_path} is not a directory"),
        (lambda: chat(object(), image, question, processor), "model must be a Mini-Gemini model or a directory"),
        (lambda: Conversation().encode(None), "processor must be a MiniGeminiProcessor"),
        (lambda: generate_answers(model, 3.5, [(image, question)]), "not float"),
    ]
    for call, message in refusals:
        with pytest.raises(UserError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
