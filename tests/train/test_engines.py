"""Every engine trains for real on this CPU, 2 processes over gloo: DDP, FSDP (the Trainer's `fsdp` option and
`accelerate launch --config_file recipes/distributed/fsdp.yaml`), DeepSpeed ZeRO-2, ZeRO-2 with CPU offload, ZeRO-3.

One launch per engine trains, in the same two processes: stage 1 in fp32 for 10 steps (compared with one process:
losses, which tensors trained, the weights), stage 2 in full in bf16 with gradient checkpointing and accumulation, and
stage 2 with LoRA.  The final models are plain folders (transformers' pipeline and `mgm chat` load each; the one
gathered from ZeRO-3 partitions runs on vLLM).  The sharded engines are killed (SIGKILL, one rank) and resumed; two
"nodes" of one process meet through torchrun's c10d rendezvous; bad launches stop with one line before anything is
written.

Loss tolerance (fp32): 1e-5 absolute on losses near 5.7.  One process sums a batch's gradient in one order, two
processes each sum half and all-reduce (ZeRO: reduce-scatter; FSDP: reduce-scatter of flat shards), so the sums differ
in the last bits (fp32 epsilon 1.2e-7 relative); Adam's update is normalised, so that difference moves the weights by
about lr x 1e-7 per step and the loss by far less than 1e-5 in 10 steps (measured: 0 to 9.5e-7, at most 2 units in
the last place of an fp32 near 5.7).  Consecutive losses differ by 1e-3 to 3e-2, so a wrong batch, a rank's lost
gradient or a parameter trained that should not be is far outside it.  FSDP and ZeRO-2 reach the global batch through
gradient accumulation, the other engines at once.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minigemini import MiniGeminiConfig, MiniGeminiForConditionalGeneration, MiniGeminiProcessor, cli
from minigemini.errors import UserError
from minigemini.train import TrainConfig, train
from minigemini.train.engines import DDP, FSDP, Engine, check_resume_engine, checkpoint_engine, run_engine
from minigemini.train.lora import merge_lora
from tests.helpers.serving import free_port
from tests.helpers.training import caption_records, conversation, make_model_dir, write_images, write_jsonl
from tests.train.engine_helpers import (
    DISTRIBUTED,
    ENGINES,
    losses,
    run_plan,
    start_and_kill_rank,
    summary,
    torchrun,
    write_plan,
)

LOSS_ATOL = 1e-5
STEPS = 10
TOWERS = ("model.vision_tower.", "model.vision_tower_aux.")
DISTRIBUTED_TYPE = {"ddp": "MULTI_CPU", "fsdp": "FSDP"}
ACCUMULATING = ("fsdp", "zero2")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    model = make_model_dir(root / "model")
    # attention heads of 32: the smallest head size vLLM's CPU attention has kernels for (the consolidated model runs
    # on vLLM below)
    config = MiniGeminiConfig.from_pretrained(model)
    config.text_config.update({"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32})
    torch.manual_seed(0)
    MiniGeminiForConditionalGeneration(config).save_pretrained(model)
    names = write_images(root / "images", 4)
    # 16 image samples and 4 text-only ones: under ZeRO-3 / FSDP a rank whose batch has no image must still run the
    # encoders (the model does, on a blank image weighted 0) or the ranks' collectives fall out of step.
    records = caption_records(names) * 4 + [conversation("Say hi.", "Hi!"), conversation("Sofa colour?", "Red.")] * 2
    data = write_jsonl(root / "data.jsonl", records)
    return {"root": root, "model": model, "images": str(root / "images"), "data": data}


def settings(workspace, output, **overrides) -> dict:
    values = {
        "stage": 1,
        "model": workspace["model"],
        "data": [workspace["data"]],
        "image_folder": [workspace["images"]],
        "output": str(workspace["root"] / output),
        "global_batch_size": 4,
        "per_device_batch_size": 2,
        "learning_rate": 1e-3,
        "max_steps": STEPS,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "warmup_ratio": 0.0,
        "dataloader_workers": 0,
        "seed": 0,
        "save_steps": 100,
    }
    values.update(overrides)
    return values


def stage_two(workspace, output, **overrides) -> dict:
    return settings(workspace, output, stage=2, max_steps=2, precision="bf16", **overrides)


@pytest.fixture(scope="module")
def single(workspace):
    """Stage 1 in one process: the reference."""
    result = train(TrainConfig.from_sources(None, {**settings(workspace, "single"), "progress": False}))
    return result.output


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request, workspace):
    return launched(workspace, request.param)


def launched(workspace, name) -> dict:
    """One launch of an engine (once per module): its stage-1, stage-2 and LoRA runs' output folders."""
    done = workspace.setdefault("launched", {})
    if name not in done:
        done[name] = launch(workspace, name)
    return done[name]


def launch(workspace, name) -> dict:
    selected = ENGINES[name]
    # FSDP and ZeRO-2 reach the global batch of 4 through accumulation (1 x 2 processes x 2 steps), the others at once
    stage1_batch = 1 if name in ACCUMULATING else 2
    runs = {
        "stage1": settings(workspace, f"{name}-stage1", per_device_batch_size=stage1_batch, **selected),
        # per-device batch 1 x 2 processes x 2 accumulation steps = the global batch of 4
        "stage2": stage_two(
            workspace, f"{name}-stage2", per_device_batch_size=1, gradient_checkpointing=True, **selected
        ),
        "lora": stage_two(workspace, f"{name}-lora", lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, **selected),
    }
    plan = write_plan(workspace["root"] / f"{name}.json", list(runs.values()))
    run_plan(plan, workspace["root"] / f"{name}.log")
    return {"name": name, **{key: values["output"] for key, values in runs.items()}}


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "model.safetensors"))


def trained(initial, final) -> set[str]:
    assert final.keys() == initial.keys()  # the full model: consolidated, not a shard
    return {n for n in final if not torch.equal(initial[n].to(final[n].dtype), final[n])}


def assert_same_losses(output, reference, steps=STEPS):
    got, expected = losses(output), losses(reference)
    assert sorted(got) == list(range(1, steps + 1)) and sorted(expected) == sorted(got)
    worst = max(abs(got[step] - expected[step]) for step in expected)
    assert worst <= LOSS_ATOL, (worst, got, expected)


def test_stage_one_trains_as_one_process_does(engine, single, workspace):
    assert summary(engine["stage1"])["distributed"] == DISTRIBUTED_TYPE.get(engine["name"], "DEEPSPEED")
    assert summary(engine["stage1"])["world_size"] == 2
    assert summary(engine["stage1"])["gradient_accumulation_steps"] == (2 if engine["name"] in ACCUMULATING else 1)
    assert_same_losses(engine["stage1"], single)

    initial, expected, got = weights(workspace["model"]), weights(single), weights(engine["stage1"])
    changed = trained(initial, got)
    assert changed == trained(initial, expected)
    assert any(n.startswith("model.mining.") for n in changed) and any("mm_projector" in n for n in changed)
    assert not any(n.startswith((*TOWERS, "model.language_model.", "lm_head.")) for n in changed)  # frozen stays so
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-5, msg=name)


def test_stage_two_trains_the_llm_in_bf16_with_checkpointing_and_accumulation(engine, workspace):
    run = summary(engine["stage2"])
    assert run["gradient_accumulation_steps"] == 2 and run["steps"] == 2 and run["samples_seen"] == 8
    assert run["config"]["precision"] == "bf16" and run["config"]["gradient_checkpointing"]
    assert all(torch.isfinite(torch.tensor(list(losses(engine["stage2"]).values()))))
    log = (workspace["root"] / f"{engine['name']}.log").read_text(errors="replace")
    assert "is deprecated. Please use `torch.distributed" not in log  # ZeRO's FutureWarning flood is filtered
    changed = trained(weights(workspace["model"]), weights(engine["stage2"]))
    assert any(n.startswith("model.language_model.layers.") for n in changed)
    assert any(n.startswith("model.mining.") for n in changed)
    assert not any(n.startswith(TOWERS) for n in changed)


def test_consolidated_model_loads_in_transformers_and_mgm_chat(engine, workspace, monkeypatch, capsys):
    from transformers import AutoProcessor, pipeline

    folder = engine["stage2"]
    assert not [n for n in os.listdir(folder) if n.startswith(("pytorch_model_fsdp", "global_step"))]
    processor = AutoProcessor.from_pretrained(folder)
    pipe = pipeline("image-text-to-text", model=folder, processor=processor)
    image = os.path.join(workspace["images"], "img0.png")
    messages = [{"role": "user", "content": [{"type": "image", "path": image}, {"type": "text", "text": "Describe."}]}]
    answer = pipe(text=messages, max_new_tokens=3, return_full_text=False)[0]["generated_text"]
    assert isinstance(answer, str)

    monkeypatch.setattr("sys.stdin", io.StringIO("Describe the image.\n"))
    assert cli.main(["chat", "--model", folder, "--image", image, "--max-new-tokens", "2"]) == 0
    assert f"Mini-Gemini {folder}" in capsys.readouterr().out


def test_the_model_gathered_from_zero3_partitions_runs_on_vllm(workspace, tmp_path):
    """The vLLM plugin serves ZeRO-3's consolidated stage-1 output: its greedy tokens equal the project's generate()."""
    from tests.helpers.vllm_env import noise_image, reference_request, run_vllm_script, vllm_python

    vllm_python()  # the vLLM environment (make vllm-venv)
    folder = launched(workspace, "zero3")["stage1"]
    model = MiniGeminiForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    processor = MiniGeminiProcessor.from_pretrained(folder)
    images = [noise_image(tmp_path / f"image{i}.png", size, seed=i) for i, size in enumerate([(40, 30), (24, 52)])]
    requests = [
        reference_request(model, processor, "What is in this picture?", images[:1], 8),
        reference_request(model, processor, "Say hi.", [], 8),
        reference_request(model, processor, "What is in this picture?", images[1:], 8),
    ]
    job = {"runs": [{"name": "zero3", "model": folder, "requests": requests}], "refused": []}
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "vllm_plugin", "engine_script.py")
    result = run_vllm_script(Path(script), job, tmp_path, timeout=600)
    assert result["runs"]["zero3"] == [request["reference"] for request in requests]


def test_lora_adapter_saves_and_merges(engine, workspace):
    adapter = engine["lora"]
    tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    lora_b = [k for k in tensors if "lora_B" in k]
    assert lora_b and any(tensors[k].abs().max() > 0 for k in lora_b)  # trained: a fresh adapter's B is 0
    assert any(".mining." in k for k in tensors) and any(".mm_projector." in k for k in tensors)
    merged = merge_lora(adapter, str(workspace["root"] / f"{engine['name']}-merged"))
    model = MiniGeminiForConditionalGeneration.from_pretrained(merged)
    assert not any("lora" in name for name, _ in model.named_parameters())
    initial = weights(workspace["model"])
    changed = trained(initial, {k: v for k, v in model.state_dict().items() if k in initial})
    assert any(n.startswith("model.language_model.layers.") for n in changed)


@pytest.mark.parametrize("name", ["fsdp", "zero3"])
def test_a_sigkilled_rank_resumes_from_sharded_checkpoints_as_an_uninterrupted_run(name, single, workspace, capsys):
    output = str(workspace["root"] / f"{name}-killed")
    killed = settings(workspace, f"{name}-killed", save_steps=3, **ENGINES[name])
    plan = write_plan(workspace["root"] / f"{name}-killed.json", [killed], step_delay=0.3)
    step = start_and_kill_rank(plan, output, workspace["root"] / f"{name}-killed.log")
    assert 3 <= step < STEPS

    checkpoint = os.path.join(output, f"checkpoint-{step}")
    if name == "fsdp":  # one shard per rank, never gathered
        assert {"__0_0.distcp", "__1_0.distcp"} <= set(os.listdir(os.path.join(checkpoint, "pytorch_model_fsdp_0")))
    else:
        shards = os.listdir(os.path.join(checkpoint, f"global_step{step}"))
        assert {f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in (0, 1)} <= set(shards)

    # the wrong engine or world size is refused in one line, nothing written
    before = sorted(os.listdir(output))
    args = ["train", "--recipe", str(write_plan_recipe(workspace, killed)), "--resume", "--no-progress"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "on 2 process(es), this run is DDP on 1" in err, err
    assert sorted(os.listdir(output)) == before

    resumed = write_plan(workspace["root"] / f"{name}-resumed.json", [{**killed, "resume": True}])
    run_plan(resumed, workspace["root"] / f"{name}-resumed.log")
    assert summary(output)["steps"] == STEPS
    assert_same_losses(output, single)  # the steps after the checkpoint continue the uninterrupted run's losses


def write_plan_recipe(workspace, values) -> str:
    """A recipe file of the same settings without the engine (a single-process DDP run)."""
    path = workspace["root"] / "recipe-no-engine.json"
    path.write_text(json.dumps({k: v for k, v in values.items() if k not in ("deepspeed", "fsdp")}))
    return str(path)


def test_two_nodes_meet_through_c10d_rendezvous(workspace, single):
    """Two torchrun agents of one process each ("nodes" on loopback), as on two machines."""
    import subprocess

    from tests.train.engine_helpers import ROOT, WORKER, environment

    run = settings(workspace, "two-nodes")
    plan = write_plan(workspace["root"] / "two-nodes.json", [run])
    endpoint = f"127.0.0.1:{free_port()}"
    agents = []
    for node in (0, 1):
        command = torchrun(
            "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node), "--rdzv_backend", "c10d",
            "--rdzv_endpoint", endpoint, "--rdzv_id", "mgm-two-nodes", str(WORKER), str(plan),
        )  # fmt: skip
        log = open(workspace["root"] / f"node{node}.log", "wb")  # noqa: SIM115
        agents.append((subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=log, stderr=log), log))
    for agent, log in agents:
        agent.wait(timeout=300)
        log.close()
    assert [agent.returncode for agent, _ in agents] == [0, 0], (workspace["root"] / "node0.log").read_text()[-4000:]
    assert summary(run["output"])["world_size"] == 2
    assert_same_losses(run["output"], single)


def test_accelerate_launch_with_the_fsdp_recipe_config(workspace, single):
    """`accelerate launch --config_file recipes/distributed/fsdp.yaml`, as the recipes README says (its process count
    and mixed precision overridden on the command line)."""
    import subprocess

    from tests.train.engine_helpers import ROOT, environment

    output = str(workspace["root"] / "accelerate-fsdp")
    command = [
        __import__("sys").executable, "-m", "accelerate.commands.launch",
        "--config_file", str(DISTRIBUTED / "fsdp.yaml"), "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", str(free_port()), "-m", "minigemini.train",
    ]  # fmt: skip
    for key, value in settings(workspace, "accelerate-fsdp").items():
        flag = {"learning_rate": "lr"}.get(key, key).replace("_", "-")
        if key in ("gradient_checkpointing",):
            command.append("--no-gradient-checkpointing")
            continue
        command += [f"--{flag}", *(value if isinstance(value, list) else [str(value)])]
    command.append("--no-progress")
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert summary(output)["distributed"] == "FSDP"
    assert_same_losses(output, single)
    assert trained(weights(workspace["model"]), weights(output)) == trained(
        weights(workspace["model"]), weights(single)
    )


# ------------------------------------------------------------------------------------------------------ bad launches


def train_args(workspace, tmp_path, *extra) -> list[str]:
    return [
        "train", "--stage", "1", "--model", workspace["model"], "--data", workspace["data"],
        "--image-folder", workspace["images"], "--output", str(tmp_path / "out"), "--global-batch-size", "4",
        "--per-device-batch-size", "2", "--no-progress", *extra,
    ]  # fmt: skip


def refused(capsys, tmp_path, args) -> str:
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Traceback" not in captured.err, captured.err
    assert not (tmp_path / "out").exists()  # nothing half-written
    return err


def test_deepspeed_and_fsdp_together_are_refused(workspace, tmp_path, capsys):
    args = train_args(workspace, tmp_path, "--deepspeed", str(DISTRIBUTED / "zero2.json"), "--fsdp", "full_shard")
    assert "choose DeepSpeed or FSDP, not both" in refused(capsys, tmp_path, args)


def test_missing_deepspeed_names_the_extra(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "deepspeed", None)  # import deepspeed fails as if not installed
    err = refused(capsys, tmp_path, train_args(workspace, tmp_path, "--deepspeed", str(DISTRIBUTED / "zero2.json")))
    assert 'pip install "minigemini[deepspeed]"' in err


def test_deepspeed_batch_sizes_that_contradict_the_recipe_are_refused(workspace, tmp_path, capsys):
    config = json.loads((DISTRIBUTED / "zero2.json").read_text())
    config["train_batch_size"] = 8
    (tmp_path / "ds.json").write_text(json.dumps(config))
    err = refused(capsys, tmp_path, train_args(workspace, tmp_path, "--deepspeed", str(tmp_path / "ds.json")))
    assert "train_batch_size is 8 but the recipe makes it 4" in err


def test_a_world_size_the_batch_does_not_divide_is_refused(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node 3 would set it
    err = refused(capsys, tmp_path, train_args(workspace, tmp_path))
    assert "global batch 4 is not a multiple of per-device batch 2 x 3 process(es)" in err


# ------------------------------------------------------------------------------------------------------ the engine type


def test_one_engine_type_answers_what_differs_between_engines(tmp_path, monkeypatch):
    zero3 = json.loads((DISTRIBUTED / "zero3.json").read_text())
    (tmp_path / "zero1.json").write_text(json.dumps({**zero3, "zero_optimization": {"stage": 1}}))
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    config = TrainConfig.from_sources(None, {"deepspeed": str(DISTRIBUTED / "zero3.json")})
    assert run_engine(config) == Engine.deepspeed(3) and str(run_engine(config)) == "DeepSpeed ZeRO-3"
    assert run_engine(TrainConfig.from_sources(None, {"fsdp": "full_shard"})) is FSDP
    assert run_engine(TrainConfig()) is DDP
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch with an FSDP config
    assert run_engine(TrainConfig()) is FSDP
    with pytest.raises(UserError, match="choose DeepSpeed or FSDP, not both"):
        run_engine(config)

    assert [e.sharded for e in (DDP, FSDP, Engine.deepspeed(2))] == [False, True, True]
    assert [e.gathers_params for e in (FSDP, Engine.deepspeed(2), Engine.deepspeed(3))] == [False, False, True]
    assert [e.casts_model for e in (DDP, FSDP, Engine.deepspeed(3))] == [False, False, True]
    assert [e.fp32_parameters for e in (DDP, FSDP, Engine.deepspeed(3))] == [False, True, False]
    assert Engine.deepspeed(1).checkpoint_layout == Engine.deepspeed(2) == Engine.deepspeed(0).checkpoint_layout


def test_resuming_under_another_engine_is_refused_by_the_checkpoints_files(tmp_path):
    checkpoint = tmp_path / "checkpoint-3"
    (checkpoint / "global_step3").mkdir(parents=True)
    for rank in (0, 1):
        (checkpoint / f"rng_state_{rank}.pth").touch()
    (checkpoint / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").touch()
    assert checkpoint_engine(str(checkpoint)) == (Engine.deepspeed(2), 2)
    check_resume_engine(str(checkpoint), Engine.deepspeed(1), 2)  # ZeRO-1 and -2 write the same layout
    with pytest.raises(UserError, match=r"written by DeepSpeed ZeRO-2 on 2 process\(es\), this run is FSDP on 2"):
        check_resume_engine(str(checkpoint), FSDP, 2)
    (checkpoint / "global_step3" / "zero_pp_rank_0_mp_rank_00_model_states.pt").touch()
    with pytest.raises(UserError, match=r"written by DeepSpeed ZeRO-3 on 2 process\(es\), this run is DDP on 1"):
        check_resume_engine(str(checkpoint), DDP, 1)
