"""Run in the vLLM environment by tests/vllm_plugin/test_int8.py: `python int8_script.py JOB.json OUT.json`.

A real vLLM engine (CPU, eager, the job's dtype) on an `mgm quantize --scheme w8a8-int8` checkpoint: the greedy
tokens and the first step's top log-probabilities of every request (batched in one call), and what the engine built
(the LLM's quantisation scheme and int8 kernel per layer kind, the vision side's weight dtypes).
"""

import json
import os
import sys

os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # apply_model sends a function to the engine's worker
TOP_LOGPROBS = 5


def built_layers(model) -> dict:
    """One entry per LLM layer kind (`qkv_proj`, `o_proj`, ...): scheme and kernel class names; the vision side's
    weight dtypes (full precision, the engine's)."""
    layers = {}
    for name, module in model.language_model.named_modules():
        scheme = getattr(module, "scheme", None)
        if scheme is not None:
            kernel = getattr(scheme, "kernel", None)
            layers[name.rsplit(".", 1)[-1]] = [type(scheme).__name__, type(kernel).__name__]
    vision = sorted({str(p.dtype) for n, p in model.named_parameters() if not n.startswith("language_model.")})
    return {"llm_layers": layers, "vision_dtypes": vision}


def main(job_file: str, out_file: str) -> None:
    from int8_script import built_layers as inspected  # pickled by module name: the worker imports this file too
    from PIL import Image
    from vllm import LLM, SamplingParams

    import minigemini  # noqa: F401  (its plugin registers the model; imported here to fail early if missing)

    with open(job_file) as file:
        job = json.load(file)
    llm = LLM(job["model"], dtype=job["dtype"], enforce_eager=True, max_model_len=512, max_num_seqs=8,
              limit_mm_per_prompt={"image": 2}, seed=0)  # fmt: skip
    prompts = []
    for request in job["requests"]:
        prompt = {"prompt_token_ids": request["prompt_token_ids"]}
        if request["images"]:
            prompt["multi_modal_data"] = {"image": [Image.open(p).convert("RGB") for p in request["images"]]}
        prompts.append(prompt)
    params = SamplingParams(max_tokens=job["max_tokens"], temperature=0.0, logprobs=TOP_LOGPROBS)
    outputs = llm.generate(prompts, params, use_tqdm=False)
    result = {
        "tokens": [list(output.outputs[0].token_ids) for output in outputs],
        "first_logprobs": [
            {str(token): entry.logprob for token, entry in output.outputs[0].logprobs[0].items()} for output in outputs
        ],
        **llm.apply_model(inspected)[0],
    }
    llm.llm_engine.engine_core.shutdown()
    with open(out_file, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main(*sys.argv[1:3])
