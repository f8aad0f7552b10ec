"""`mgm chat`: the terminal session driven through piped stdin."""

import io
import re

import pytest

from minigemini import cli, engine
from minigemini.synthetic import COLOURS
from tests.helpers.serving import save_tiny_mgm, script_answers, solid


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_mgm(tmp_path_factory.mktemp("mgm"))


@pytest.fixture
def mgm(monkeypatch, capsys):
    """Run `mgm ARGS` in-process with ``stdin`` piped in; returns (exit code, stdout, stderr)."""

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
    original = engine.run_batch

    def spy(model, processor, requests):
        pieces = []
        for request in requests:
            callback = request.on_text
            request.on_text = lambda piece, callback=callback: (pieces.append(piece), callback and callback(piece))
        result = original(model, processor, requests)
        seen.append({"inputs": requests[0].inputs, "pieces": pieces, "text": requests[0].text})
        return result

    monkeypatch.setattr(engine, "run_batch", spy)
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
    assert re.search(
        r"^error: image file not found: .*missing\.png$", out, re.MULTILINE
    )  # one clear line, chat goes on
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
    code, _, err = mgm(["chat", "--model", str(model_dir), "--device", "cpu", "--quantize", "fp8"])
    assert code == 2 and err == "mgm chat: error: quantization fp8 runs on cuda, not cpu; choose nf4 or int8 there\n"
    # a prompt longer than the context is refused in one line and the chat goes on
    code, out, _ = mgm(["chat", "--model", str(model_dir), "--max-new-tokens", "2"], "word " * 600 + "\nshort\n")
    assert code == 0 and re.search(r"^error: the prompt is \d+ tokens .* context is 512 tokens", out, re.MULTILINE)
    assert out.count("assistant: ") == 1


def test_serving_commands_register_with_mgm(monkeypatch):
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--model", "m", "--allow-remote-urls", "--max-batch-size", "3"])
    assert args.func.__name__ == "run_serve" and args.allow_remote_urls and args.max_batch_size == 3
    assert args.host == "127.0.0.1"  # never exposed unless asked
    args = parser.parse_args(["chat", "--model", "m", "--image", "a.png", "b.png", "--image", "c.png", "--gen"])
    assert args.image == ["a.png", "b.png", "c.png"] and args.gen and args.func.__name__ == "run_chat"
    assert parser.parse_args(["web", "--model", "m"]).func.__name__ == "run_web"
    with pytest.raises(SystemExit):
        parser.parse_args(["chat", "--model", "m", "--load-4bit", "--load-8bit"])
