"""Run by tests/test_remote_code.py with the python of a venv that has torch and transformers but not minigemini:
loads each checkpoint directory given on the command line through transformers' Auto classes with
trust_remote_code=True, answers one prompt with its image, and saves what it got for the test to compare."""

import importlib.util
import sys

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor


def main(output: str, image: str, *directories: str) -> None:
    assert importlib.util.find_spec("minigemini") is None, "this venv must not have minigemini"
    results = {}
    for directory in directories:
        model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
        messages = [{"role": "user", "content": [{"type": "image", "path": image}, {"type": "text", "text": "What?"}]}]
        inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
        with torch.inference_mode():
            logits = model(**inputs).logits
        results[directory] = {
            "classes": [type(model).__module__, type(processor).__module__, type(processor.image_processor).__module__],
            "prompt": processor.apply_chat_template(messages),
            "inputs": dict(inputs),
            "logits": logits,
        }
    torch.save(results, output)


if __name__ == "__main__":
    main(*sys.argv[1:])
