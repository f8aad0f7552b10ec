"""Run in the vLLM environment by tests/vllm_plugin/test_model.py: `python engine_script.py JOB.json OUT.json`.

For each model of the job: a real vLLM engine (fp32, eager, CPU) generates greedily for all its requests in one call
(so they are batched together); for each model to refuse: the error vLLM raises while reading its config. First of all
it records whether importing `minigemini` imports vLLM.
"""

import gc
import json
import sys
import time


def main(job_file: str, out_file: str) -> None:
    import minigemini  # noqa: F401  (before anything imports vLLM)

    result = {"minigemini_imports_vllm": "vllm" in sys.modules, "runs": {}, "refused": {}}
    from PIL import Image
    from vllm import LLM, SamplingParams

    with open(job_file) as file:
        job = json.load(file)
    for run in job["runs"]:
        started = time.perf_counter()
        llm = LLM(
            run["model"],
            dtype="float32",
            enforce_eager=True,
            max_model_len=512,
            max_num_seqs=8,
            limit_mm_per_prompt={"image": 2},
            seed=0,
        )
        prompts = []
        for request in run["requests"]:
            prompt = {"prompt_token_ids": request["prompt_token_ids"]}
            if request["images"]:
                prompt["multi_modal_data"] = {"image": [Image.open(p).convert("RGB") for p in request["images"]]}
            prompts.append(prompt)
        params = [SamplingParams(max_tokens=r["max_tokens"], temperature=0.0) for r in run["requests"]]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        result["runs"][run["name"]] = [list(output.outputs[0].token_ids) for output in outputs]
        print(f"{run['name']}: engine started and answered in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    for refused in job["refused"]:
        try:
            LLM(refused["model"], dtype="float32", enforce_eager=True, max_model_len=512)
            result["refused"][refused["name"]] = None
        except Exception as error:  # noqa: BLE001 - whatever vLLM raises is what the user sees
            result["refused"][refused["name"]] = f"{type(error).__name__}: {error}"
    with open(out_file, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main(*sys.argv[1:3])
