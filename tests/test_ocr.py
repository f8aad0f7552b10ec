"""OCR hints (rapidocr-onnxruntime, offline): the rendered word is found and appended to the question."""

import pytest
from PIL import Image, ImageDraw, ImageFont

from minigemini import ocr


@pytest.fixture(scope="module")
def sign():
    """Large black DejaVu text on white, two lines."""
    image = Image.new("RGB", (420, 220), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype("DejaVuSans-Bold.ttf", 60)
    draw.text((20, 20), "GEMINI", fill="black", font=font)
    draw.text((20, 120), "OPEN 24", fill="black", font=font)
    return image


def test_ocr_reads_rendered_words_in_reading_order(sign):
    assert ocr.ocr_tokens(sign) == ["GEMINI", "OPEN 24"]


def test_ocr_hint_is_appended_to_the_question(sign):
    question = ocr.add_ocr_hint("What does the sign say?", [sign])
    assert question == "What does the sign say?\nReference OCR token: GEMINI, OPEN 24"
    assert ocr.add_ocr_hint("q", [Image.new("RGB", (64, 64), "white")]) == "q"  # nothing found: unchanged
    assert ocr.ocr_hint([]) == ""


def test_ocr_reads_words_drawn_by_the_synthetic_renderer():
    from minigemini.synthetic import render

    picture = render('a blue circle "HELLO"', size=320)
    assert "HELLO" in ocr.ocr_tokens(picture)


def test_chat_cli_and_server_add_the_ocr_tokens(sign, tmp_path, monkeypatch, capsys):
    import io

    from minigemini import cli, engine, loading
    from tests.helpers.serving import save_tiny_mgm

    model_dir = save_tiny_mgm(tmp_path / "mgm")
    sign.save(tmp_path / "sign.png")
    prompts = []
    original = engine.run_batch

    def spy(model, processor, requests):
        prompts.append(processor.decode(requests[0].inputs["input_ids"][0]))
        return original(model, processor, requests)

    monkeypatch.setattr(engine, "run_batch", spy)
    monkeypatch.setattr("sys.stdin", io.StringIO("What does it say?\n"))
    code = cli.main(["chat", "--model", str(model_dir), "--ocr", "--image", str(tmp_path / "sign.png"),
                     "--max-new-tokens", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "[ocr] Reference OCR token: GEMINI, OPEN 24" in out
    assert "What does it say?\nReference OCR token: GEMINI, OPEN 24" in prompts[0]

    from fastapi.testclient import TestClient

    from minigemini.serve.app import create_app

    model, processor = loading.load_pretrained(model_dir)
    with TestClient(create_app(model, processor)) as client:
        url = "data:image/png;base64," + __import__("base64").b64encode((tmp_path / "sign.png").read_bytes()).decode()
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Read it"}],
                }
            ],
            "max_tokens": 1,
        }
        plain = client.post("/v1/chat/completions", json=body).json()
        with_ocr = client.post("/v1/chat/completions", json={**body, "ocr": True}).json()
    assert with_ocr["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]
    assert "Read it\nReference OCR token: GEMINI, OPEN 24" in prompts[-1]
