"""Shared pieces of the evaluation tests: a tiny random Mini-Gemini checkpoint with its processor, saved to a
temporary folder (tokenizer built here with `tokenizers`; nothing is downloaded), and small image helpers."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from minigemini import MiniGeminiConfig, MiniGeminiForConditionalGeneration
from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.processing import MiniGeminiProcessor

WORDS = (  # noqa: SIM905  (a sentence of words reads better than a list)
    "a chat between curious user and an artificial intelligence assistant the gives helpful detailed polite "
    "answers to user's questions USER ASSISTANT what is in this image picture colour color shape how many "
    "are there word written answer question using single or phrase with option's letter from given choices "
    "directly yes no red green blue yellow circle square triangle one two three four five A B C D E cat dog "
    "is there please . , ? ! ' : ( ) 0 1 2 3 4 5 6 7 8 9"
).split()


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_config(vocab_size: int, image_token_id: int, text_overrides: dict | None = None) -> MiniGeminiConfig:
    """The sizes of tests/conftest.py's tiny config (LR 32px / patch 8 -> 16 tokens, HR 64px), with the
    vocabulary of the local tokenizer."""
    return MiniGeminiConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        vision_aux_config={"model_type": "convnext", "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
        text_config={
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": vocab_size,
            "max_position_embeddings": 512,
            "pad_token_id": 2,
            "bos_token_id": 1,
            "eos_token_id": 2,
            **(text_overrides or {}),
        },
        image_size_aux=64,
        image_token_id=image_token_id,
    )


#: attention heads of 32, the smallest head size vLLM's CPU attention has kernels for
VLLM_HEADS = {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32}


def build_checkpoint(path: Path, seed: int = 0, text_overrides: dict | None = None) -> Path:
    tokenizer = make_tokenizer()
    processor = MiniGeminiProcessor(
        MiniGeminiImageProcessor(image_size=32, image_size_aux=64),
        tokenizer,
        image_seq_length=16,
        chat_template="vicuna_v1",
    )
    torch.manual_seed(seed)
    config = tiny_config(len(tokenizer), processor.image_token_id, text_overrides)
    model = MiniGeminiForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def png_bytes(colour=(200, 30, 30), size=(12, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, colour=(200, 30, 30), size=(12, 9)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(colour, size))
    return path


class JudgeServer:
    """A tiny OpenAI-compatible chat-completions server on 127.0.0.1 (a port the OS picks), in a thread.

    ``reply(prompt, request_body) -> str | int | bytes``: a string is the completion's content, an int an HTTP
    error status, bytes a raw (non-JSON) body.  Requests are recorded.  The server stops when the context ends, and by itself after
    ``lifetime`` seconds whatever happens.
    """

    def __init__(self, reply, lifetime: float = 60.0):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server_self.requests.append(
                    {"path": self.path, "body": body, "authorization": self.headers.get("Authorization")}
                )
                answer = reply(body["messages"][0]["content"], body)
                if isinstance(answer, int):
                    self.send_response(answer)
                    self.end_headers()
                    return
                if isinstance(answer, bytes):  # a reply that is not JSON
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.watchdog = threading.Timer(lifetime, self.server.shutdown)
        self.watchdog.daemon = True

    def __enter__(self):
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc):
        self.watchdog.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def make_judge(server: JudgeServer, **kwargs):
    """A Judge of ``server`` that does not wait between retries."""
    from minigemini.evaluation.judge import Judge, JudgeConfig

    return Judge(JudgeConfig(base_url=server.url, model="grader-1", retry_wait=0.0, timeout=5, **kwargs))


# ---------------------------------------------------------------------------------------------------------
# Benchmark files in their authors' formats, made in a temporary folder
# ---------------------------------------------------------------------------------------------------------

TEN = ["red"] * 4 + ["dark red"] * 3 + ["maroon"] * 3


def write_llava_jsonl(root: Path) -> Path:
    """TextVQA-style question JSONL: 2 good rows (answers inline), one with a missing image, one line that is
    not JSON, one with an answer in an unknown format."""
    import json

    write_png(root / "images" / "a.png", (200, 20, 20))
    write_png(root / "images" / "b.png", (20, 20, 200))
    lines = [
        json.dumps(
            {
                "question_id": "q1",
                "image": "a.png",
                "text": "What colour is it?\nReference OCR token: STOP",
                "answers": TEN,
                "category": "colour",
            }
        ),
        json.dumps({"question_id": "q2", "image": "b.png", "text": "What colour is it?", "answers": ["blue"] * 10}),
        json.dumps({"question_id": "q3", "image": "gone.png", "text": "What is there?", "answers": ["x"] * 10}),
        '{"question_id": "q4", "image": "a.png", "text": ',
        json.dumps({"question_id": "q5", "image": "a.png", "text": "Odd?", "answers": {"weird": 1}}),
    ]
    path = root / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mme(root: Path) -> Path:
    """MME release layout: `artwork` with images/ + questions_answers_YN/, `code_reasoning` flat; one line
    without a tab and one answer that is neither yes nor no."""
    write_png(root / "artwork" / "images" / "10002.jpg", (90, 60, 30))
    (root / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork created by Monet? Please answer yes or no.\tYes\n"
        "Is this artwork created by Dali? Please answer yes or no.\tNo\n"
    )
    write_png(root / "code_reasoning" / "0001.png", (250, 250, 250))
    (root / "code_reasoning" / "0001.txt").write_text(
        "Will this code print 3? Please answer yes or no.\tYes\n"
        "Will this code print 4? Please answer yes or no.\tMaybe\n"
        "a line without any tab\n"
    )
    return root


def mmbench_rows(circular: bool) -> list[dict]:
    import base64

    image = base64.b64encode(png_bytes((10, 200, 10), (16, 16))).decode()
    options = ["red", "green", "blue", "yellow"]
    rows = []
    for index, answer in ((3, "B"), (4, "D")):
        rows.append(
            {
                "index": index,
                "question": "Which colour dominates?",
                "hint": "nan",
                "A": options[0],
                "B": options[1],
                "C": options[2],
                "D": options[3],
                "answer": answer,
                "category": "attribute",
                "l2-category": "perception",
                "split": "dev",
                "image": image,
            }
        )
        if circular:
            for shift in (1, 2, 3):
                rotated = options[shift:] + options[:shift]
                gold = "ABCD"[("ABCD".index(answer) - shift) % 4]
                rows.append(
                    {
                        **rows[-shift],
                        "index": index + shift * 1_000_000,
                        "A": rotated[0],
                        "B": rotated[1],
                        "C": rotated[2],
                        "D": rotated[3],
                        "answer": gold,
                        "image": str(index),
                    }
                )
    rows.append(
        {
            "index": "not-a-number",
            "question": "?",
            "hint": "nan",
            "A": "a",
            "B": "b",
            "C": "nan",
            "D": "nan",
            "answer": "A",
            "category": "x",
            "l2-category": "y",
            "split": "dev",
            "image": image,
        }
    )
    rows.append(
        {
            "index": 9,
            "question": "Which?",
            "hint": "A hint",
            "A": "a",
            "B": "b",
            "C": "nan",
            "D": "nan",
            "answer": "Q",
            "category": "x",
            "l2-category": "y",
            "split": "dev",
            "image": image,
        }
    )
    return rows


def write_mmbench_tsv(path: Path, circular: bool) -> Path:
    import csv

    rows = mmbench_rows(circular)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


def mmmu_table():
    import pyarrow as pa

    image = {"bytes": png_bytes((30, 30, 30)), "path": None}
    rows = [
        {
            "id": "validation_Art_1",
            "question": "<image 1> Which style?",
            "options": "['Baroque', 'Cubism']",
            "answer": "B",
            "question_type": "multiple-choice",
            "image_1": image,
        },
        {
            "id": "validation_Math_2",
            "question": "<image 1> What is x?",
            "options": "[]",
            "answer": "12",
            "question_type": "open",
            "image_1": image,
        },
        {
            "id": "validation_Math_3",
            "question": "Broken",
            "options": "['a'",
            "answer": "A",
            "question_type": "multiple-choice",
            "image_1": None,
        },
        {
            "id": "validation_Math_4",
            "question": "Odd type",
            "options": "[]",
            "answer": "1",
            "question_type": "essay",
            "image_1": None,
        },
    ]
    return pa.Table.from_pylist(rows)


def mathvista_table():
    import pyarrow as pa

    image = {"bytes": png_bytes((0, 0, 0)), "path": "images/1.jpg"}
    rows = [
        {
            "pid": "1",
            "question": "How many birds?",
            "image": "images/1.jpg",
            "decoded_image": image,
            "choices": None,
            "unit": None,
            "precision": None,
            "answer": "14",
            "question_type": "free_form",
            "answer_type": "integer",
            "query": "Hint: integer\nQuestion: How many birds?",
            "metadata": {
                "category": "math-targeted-vqa",
                "task": "figure question answering",
                "skills": ["arithmetic"],
            },
        },
        {
            "pid": "2",
            "question": "Which fraction?",
            "image": "images/2.jpg",
            "decoded_image": image,
            "choices": ["3/11", "8/11"],
            "unit": None,
            "precision": None,
            "answer": "8/11",
            "question_type": "multi_choice",
            "answer_type": "text",
            "query": None,
            "metadata": {"category": "general-vqa", "task": "textbook question answering", "skills": ["algebra"]},
        },
        {
            "pid": "3",
            "question": "Bad",
            "image": "images/3.jpg",
            "decoded_image": image,
            "choices": ["a", "b"],
            "unit": None,
            "precision": None,
            "answer": "c",
            "question_type": "multi_choice",
            "answer_type": "text",
            "query": None,
            "metadata": {"category": "x", "task": "y", "skills": []},
        },
    ]
    return pa.Table.from_pylist(rows)


def pope_rows():
    rows = []
    for number, (category, answer) in enumerate(
        (("adversarial", "yes"), ("adversarial", "no"), ("random", "no"), ("random", "yes"), ("random", "perhaps"))
    ):
        rows.append(
            {
                "question_id": str(number),
                "question": "Is there a dog in the image?",
                "answer": answer,
                "category": category,
                "image": {"bytes": png_bytes((number * 40, 90, 90)), "path": None},
            }
        )
    return rows


@contextlib.contextmanager
def one_torch_thread():
    """The tiny models are faster on one thread, and a busy 2-core machine makes two threads wait on each other."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# ---------------------------------------------------------------------------------------------------------
# Runs without a model: scripted answers stand in for generation
# ---------------------------------------------------------------------------------------------------------


def by_question(answers: dict[str, str]):
    """An answer function for `scripted_run`: the answer of the first key that occurs in the prompt."""

    def answer(prompt: str) -> str:
        for key, text in answers.items():
            if key in prompt:
                return text
        raise KeyError(f"no scripted answer for the prompt {prompt!r}")

    return answer


def scripted_run(bench: str, data, out, answer, asked: list | None = None, **config) -> dict:
    """`mgm eval` up to the answers file, with `answer(prompt) -> text` instead of a model (images are still
    loaded, as in a real run); the prompts asked are appended to `asked`.  Returns run_benchmark's summary."""
    from minigemini.evaluation.runner import RunConfig, run_benchmark

    def answer_fn(model, processor, batch, max_new_tokens):
        prompts = [prompt for _, prompt in batch]
        if asked is not None:
            asked.extend(prompts)
        return [answer(prompt) for prompt in prompts]

    run_config = RunConfig(bench=bench, data=str(data), out=Path(out), **config)
    return run_benchmark(None, None, run_config, answer_fn=answer_fn, log=lambda message: None)


def write_jsonl(path: Path, rows) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_json(path: Path, data) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
