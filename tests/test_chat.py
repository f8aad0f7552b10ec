"""The Python API (chat one-liner, batched inference, loading defaults) and `mgm chat` driven through piped stdin."""

import io
import re

import pytest
import torch

from minigemini import cli, inference, precision
from minigemini.inference import batch_chat, chat, load_pretrained, parse_dtype, resolve_device
from minigemini.synthetic import COLOURS

from .serving_helpers import save_tiny_mgm, script_answers, solid


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
        assert inference.default_dtype(torch.device("cpu")) == dtype
    assert inference.default_dtype(torch.device("mps")) == torch.float16
    assert parse_dtype("bf16") == torch.bfloat16 and parse_dtype("auto") is None
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_dtype("fp8")
    model, _ = load_pretrained(model_dir, device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="4-bit loading needs bitsandbytes on a CUDA device"):
        load_pretrained(model_dir, device="cpu", load_in_4bit=True)


# ------------------------------------------------------------------------------------------- mgm chat


@pytest.fixture
def mgm(monkeypatch, capsys):
    """Run `mgm ARGS` in-process with ``stdin`` piped in; returns (exit code, stdout, stderr)."""
    monkeypatch.setitem(cli.SUBCOMMANDS, "chat", "minigemini.serve.chat")

    def run(args, stdin=""):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cli.main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def spy_batches(monkeypatch):
    """Record the inputs of every generation and the streamed pieces."""
    seen = []
    original = inference.run_batch

    def spy(model, processor, requests):
        pieces = []
        for request in requests:
            callback = request.on_text
            request.on_text = lambda piece, callback=callback: (pieces.append(piece), callback and callback(piece))
        result = original(model, processor, requests)
        seen.append({"inputs": requests[0].inputs, "pieces": pieces, "text": requests[0].text})
        return result

    monkeypatch.setattr(inference, "run_batch", spy)
    return seen


def test_chat_cli_multi_turn_with_an_image_attached_midway(model_dir, tmp_path, mgm, spy_batches):
    red = tmp_path / "red.png"
    solid((255, 0, 0)).save(red)
    stdin = "\n".join([
        "Hello there",
        f"/image {red}",
        "What colour is this?",
        f"/image {tmp_path / 'missing.png'}",
        "And now?",
        "/reset",
        "Fresh start",
    ]) + "\n"  # fmt: skip
    code, out, err = mgm(["chat", "--model", str(model_dir), "--max-new-tokens", "4", "--temperature", "0"], stdin)
    assert code == 0 and "error" not in err.lower()
    assert out.count("assistant: ") == 4
    assert f"[image] {red} attached to your next message" in out
    assert re.search(r"^error: image file not found: .*missing\.png$", out, re.MULTILINE)  # one clear line, chat goes on
    assert "[reset] new conversation" in out
    turns = [batch["inputs"] for batch in spy_batches]
    assert [("pixel_values" in t) and t["pixel_values"].shape[0] for t in turns] == [False, 1, 1, False]
    assert turns[2]["input_ids"].shape[1] > turns[1]["input_ids"].shape[1]  # the history is kept
    for batch in spy_batches:  # streamed piece by piece, and what was printed is the answer
        assert "".join(batch["pieces"]).strip() == batch["text"]
        assert f"assistant: {''.join(batch['pieces'])}\n" in out
    assert max(len(batch["pieces"]) for batch in spy_batches) > 1


def test_chat_cli_quit_and_end_of_input(model_dir, mgm):
    code, out, _ = mgm(["chat", "--model", str(model_dir), "--max-new-tokens", "2"], "hi\n/quit\nnever asked\n")
    assert code == 0 and out.count("assistant: ") == 1
    code, out, _ = mgm(["chat", "--model", str(model_dir), "--max-new-tokens", "2"], "")
    assert code == 0 and "assistant: " not in out


def test_chat_cli_gen_saves_the_picture_the_answer_describes(model_dir, tmp_path, mgm, monkeypatch, spy_batches):
    script_answers(monkeypatch, _processor(model_dir), "Here it is. <h>a red circle on a blue background</h>")
    out_dir = tmp_path / "pictures"
    code, out, _ = mgm(
        ["chat", "--model", str(model_dir), "--gen", "--image-generator", "synthetic", "--output-dir", str(out_dir),
         "--max-new-tokens", "80"],
        "Draw me something\n",
    )  # fmt: skip
    assert code == 0
    assert "assistant: Here it is. <h>a red circle on a blue background</h>" in out
    picture_path = out_dir / "mgm-picture-001.png"
    assert f"[picture] saved {picture_path} (512x512) for the prompt: a red circle on a blue background" in out
    from PIL import Image

    picture = Image.open(picture_path)
    assert picture.getpixel((256, 256)) == COLOURS["red"] and picture.getpixel((3, 3)) == COLOURS["blue"]
    # the user turn carried <GEN>, as the paper trains it
    prompt = _processor(model_dir).decode(spy_batches[0]["inputs"]["input_ids"][0])
    assert "Draw me something <GEN>" in prompt


def _processor(model_dir):
    from minigemini import MiniGeminiProcessor

    return MiniGeminiProcessor.from_pretrained(model_dir)


def test_chat_cli_errors_are_one_line(model_dir, tmp_path, mgm):
    code, _, err = mgm(["chat", "--model", str(tmp_path / "nope")])
    assert code == 2 and err.startswith("mgm chat: error: model directory not found") and len(err.splitlines()) == 1
    code, _, err = mgm(["chat", "--model", str(model_dir), "--device", "cpu", "--load-8bit"])
    assert code == 2 and "8-bit loading needs bitsandbytes on a CUDA device" in err and "Traceback" not in err
    # a prompt longer than the context is refused in one line and the chat goes on
    code, out, _ = mgm(["chat", "--model", str(model_dir), "--max-new-tokens", "2"], "word " * 600 + "\nshort\n")
    assert code == 0 and re.search(r"^error: the prompt is \d+ tokens .* context is 512 tokens", out, re.MULTILINE)
    assert out.count("assistant: ") == 1


def test_serving_commands_register_with_mgm(monkeypatch):
    for name in ("chat", "serve", "web"):
        monkeypatch.setitem(cli.SUBCOMMANDS, name, f"minigemini.serve.{'server' if name == 'serve' else name}")
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--model", "m", "--allow-remote-urls", "--max-batch-size", "3"])
    assert args.func.__name__ == "run_serve" and args.allow_remote_urls and args.max_batch_size == 3
    assert args.host == "127.0.0.1"  # never exposed unless asked
    args = parser.parse_args(["chat", "--model", "m", "--image", "a.png", "b.png", "--image", "c.png", "--gen"])
    assert args.image == ["a.png", "b.png", "c.png"] and args.gen and args.func.__name__ == "run_chat"
    assert parser.parse_args(["web", "--model", "m"]).func.__name__ == "run_web"
    with pytest.raises(SystemExit):
        parser.parse_args(["chat", "--model", "m", "--load-4bit", "--load-8bit"])


def test_a_published_release_checkpoint_loads_for_chat(tmp_path):
    """`mgm chat --model <a YanweiLi/MGM-* download>` works: the release layout is converted on load."""
    from . import tiny_release
    tiny_release.make_release(tmp_path / "release", "llama")
    model, processor = load_pretrained(tmp_path / "release")
    assert processor.chat_template == "vicuna_v1"
    answer = chat(model, solid((255, 0, 0)), "What is it?", processor, max_new_tokens=3)
    assert isinstance(answer, str)
