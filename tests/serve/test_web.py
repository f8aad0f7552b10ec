"""`mgm web` end to end in headless Chromium (Debian's `chromium`, driven by Playwright; no browser download):
upload an image, ask for a picture, see the streamed answer and the generated picture in the page."""

import os
import shutil

import pytest

from minigemini.serve.web import conversation_from_history
from tests.helpers.serving import free_port, save_tiny_mgm, script_answers, solid

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


def test_history_is_rebuilt_with_images_and_tags():
    history = [
        {"role": "user", "content": [{"type": "file", "file": {"path": "/tmp/a.png"}}]},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat. \\<h>a cat\\</h>"}]},
        {"role": "assistant", "content": [{"type": "component", "component": "image", "value": {"path": "/x.png"}}]},
        {"role": "user", "content": "And this?"},
        {"role": "user", "content": {"path": "/tmp/b.jpg"}},
    ]
    conversation = conversation_from_history(history)
    assert conversation.messages == [
        {"role": "user", "content": "<image>What is this?"},
        {"role": "assistant", "content": "A cat. <h>a cat</h>"},  # the display escape is undone
        {"role": "user", "content": "And this?"},
    ]
    assert conversation.images == ["/tmp/a.png"]  # a trailing upload without text waits for the next turn


@pytest.fixture(scope="module")
def web_app(tmp_path_factory):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from minigemini.loading import load_pretrained
    from minigemini.serve.batching import BatchingEngine
    from minigemini.serve.web import create_demo, local_theme
    from minigemini.text_to_image import SyntheticTextToImage

    model, processor = load_pretrained(save_tiny_mgm(tmp_path_factory.mktemp("mgm")))
    engine = BatchingEngine(model, processor, max_batch_size=2).start()
    submitted = []
    submit = engine.submit
    engine.submit = lambda request, on_done=None: submitted.append(request) or submit(request, on_done)
    demo = create_demo(engine, SyntheticTextToImage(size=96), max_new_tokens=80, temperature=0.0)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False,
                theme=local_theme(), quiet=True)  # fmt: skip
    yield f"http://127.0.0.1:{port}", processor, submitted
    demo.close()
    engine.close()


def test_web_chat_in_headless_chromium(web_app, tmp_path, monkeypatch):
    from playwright import sync_api

    assert os.path.exists(CHROMIUM), (
        "Debian's chromium is needed (make test installs it where apt-get runs as root: apt-get install chromium)"
    )
    url, processor, submitted = web_app
    script_answers(monkeypatch, processor, "A red square. <h>a red circle on a blue background</h>")
    upload = tmp_path / "red.png"
    solid((255, 0, 0), (60, 60)).save(upload)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            # nothing leaves the machine: only the app on 127.0.0.1 is reachable
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url) else route.abort())
            page.goto(url + "/")
            page.set_input_files("#mgm-input input[type=file]", str(upload))
            page.locator("#mgm-gen input[type=checkbox]").check()
            page.locator("#mgm-input textarea").fill("What colour is this?")
            page.keyboard.press("Enter")
            # re-query on every poll: Gradio re-renders the message while the answer streams in
            last_bot_image = """() => { const all = document.querySelectorAll('#mgm-chatbot [data-testid="bot"] img');
                                      const img = all[all.length - 1];
                                      return img && img.complete && img.naturalWidth > 0 ? img : null; }"""
            page.wait_for_function(last_bot_image, timeout=90_000)
            page.wait_for_function("() => document.querySelector('#mgm-chatbot').innerText.includes('</h>')")
            page.screenshot(path=str(tmp_path / "web.png"), full_page=True)

            text = page.locator("#mgm-chatbot").inner_text()
            assert "What colour is this?" in text
            assert "A red square. <h>a red circle on a blue background</h>" in text  # tags shown, not eaten as HTML
            assert page.locator('#mgm-chatbot [data-testid="user"] img').count() >= 1  # the upload is shown
            # the generated picture is what the answer's <h> prompt describes: red circle, blue background
            centre, corner = page.evaluate(
                f"""() => {{ const img = ({last_bot_image})(); const c = document.createElement('canvas');
                   c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d');
                   g.drawImage(img, 0, 0); const at = (x, y) => Array.from(g.getImageData(x, y, 1, 1).data.slice(0, 3));
                   return [at(c.width / 2, c.height / 2), at(2, 2)]; }}"""
            )
            assert tuple(centre) == (220, 30, 30) and tuple(corner) == (30, 70, 220)
        finally:
            browser.close()
    # the model saw the uploaded image and the <GEN> request
    request = submitted[-1]
    assert request.inputs["pixel_values"].shape[0] == 1
    assert "What colour is this? <GEN>" in processor.decode(request.inputs["input_ids"][0])


def test_pictures_reach_gradio_as_png_files_written_once(tmp_path, monkeypatch):
    # Handed a PIL image, Gradio re-encodes it into the same cache file on each re-render, and a browser reading the
    # file meanwhile gets a truncated picture (seen on a loaded CI machine); a file path is copied once, atomically.
    import gradio.processing_utils
    from PIL import Image

    from minigemini.loading import load_pretrained
    from minigemini.serve.batching import BatchingEngine
    from minigemini.serve.web import create_demo
    from minigemini.text_to_image import SyntheticTextToImage

    model, processor = load_pretrained(save_tiny_mgm(tmp_path))
    script_answers(monkeypatch, processor, "Red. <h>a red circle on a blue background</h>")
    encoded = []
    encode = gradio.processing_utils.save_pil_to_cache
    monkeypatch.setattr(
        gradio.processing_utils, "save_pil_to_cache", lambda *a, **k: encoded.append(a) or encode(*a, **k)
    )
    engine = BatchingEngine(model, processor, max_batch_size=1).start()
    try:
        demo = create_demo(engine, SyntheticTextToImage(size=64), max_new_tokens=40, temperature=0.0)
        *_, last = demo.fn({"text": "Draw it", "files": []}, [], True, False, 40, 0.0)
        answer, picture = last
        history = [{"role": "user", "content": "Draw it"}, {"role": "assistant", "content": answer},
                   {"role": "assistant", "content": picture}]  # fmt: skip
        shown = [demo.chatbot.postprocess(history) for _ in range(2)]  # two re-renders
    finally:
        engine.close()
    assert answer.startswith("Red.") and picture.label == "a red circle on a blue background"
    assert encoded == []  # never re-encoded into the cache
    path = picture.value["path"]
    assert path.endswith(".png") and shown[0] == shown[1]
    with Image.open(path) as image:
        assert image.size == (64, 64) and image.getpixel((32, 32)) == (220, 30, 30)


def test_mgm_web_builds_from_its_command_line(tmp_path):
    import argparse

    import gradio as gr

    from minigemini.cli import web

    parser = argparse.ArgumentParser()
    web.add_parser(parser.add_subparsers())
    args = parser.parse_args(["web", "--model", str(save_tiny_mgm(tmp_path)), "--device", "cpu",
                              "--image-generator", "synthetic", "--max-batch-size", "3"])  # fmt: skip
    demo, engine = web.build_web(args)
    try:
        assert isinstance(demo, gr.ChatInterface) and engine.max_batch_size == 3
        options = web.launch_options(args)
        assert options["server_name"] == "127.0.0.1" and options["share"] is False
    finally:
        engine.close()
