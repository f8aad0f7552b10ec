"""The distributed engines around the Trainer: what each needs beyond the Trainer's and accelerate's own handling.

On a machine without an accelerator (DDP, FSDP and DeepSpeed ZeRO over gloo on CPU), two gaps are closed here:

- accelerate turns FSDP on only for GPU-like devices: with ``use_cpu`` (the Trainer's choice on a CPU) a ``--fsdp``
  run, or an ``accelerate launch --config_file fsdp.yaml`` one, would silently train as plain DDP.  torch's FSDP2
  (``fully_shard``) shards on CPU over gloo, so the accelerator's state is switched to FSDP with the same plugin
  (``enable_fsdp_on_cpu``, called by ``MiniGeminiTrainer`` right after it creates its accelerator).
- under ZeRO-3 ``from_pretrained`` partitions the weights while loading (``deepspeed.zero.Init``) and sizes its batch
  check by ``deepspeed.comm``'s world, which on a CPU nobody has started yet (accelerate starts it on GPUs only):
  ``start_deepspeed_comm`` attaches it to the gloo process group the Trainer's arguments started.

Everywhere: FSDP checkpoints are sharded and the final model gathered (``fsdp_settings``, ``consolidate_final_save``);
``mgm train --deepspeed`` runs without a launcher (``launch_alone``); and a launch that cannot work is refused before
anything is written: DeepSpeed batch sizes against the recipe, ZeRO-3 without consolidation, a checkpoint from another
engine or world size (``check_deepspeed_config``, ``check_resume_engine``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings

import torch

from minigemini.errors import UserError

__all__ = [
    "DDP",
    "FSDP",
    "Engine",
    "accelerate_fsdp",
    "check_deepspeed_config",
    "check_resume_engine",
    "checkpoint_engine",
    "consolidate_final_save",
    "enable_fsdp_on_cpu",
    "fsdp_requested",
    "fsdp_settings",
    "launch_alone",
    "on_accelerator",
    "quiet_deepspeed_comm",
    "read_deepspeed_config",
    "run_engine",
    "start_deepspeed_comm",
]

logger = logging.getLogger(__name__)


def on_accelerator() -> bool:
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def accelerate_fsdp() -> bool:
    """Launched by ``accelerate launch`` with an FSDP config (the launcher sets ACCELERATE_USE_FSDP)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def fsdp_requested(args) -> bool:
    """FSDP asked for by the Trainer's ``fsdp`` option or by ``accelerate launch`` with an FSDP config."""
    return args.fsdp_plugin_args is not None or accelerate_fsdp()


def enable_fsdp_on_cpu(accelerator, args) -> bool:
    """Make a CPU run that asked for FSDP train under FSDP (not DDP); True when it switched the accelerator."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if not fsdp_requested(args) or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    if args.fsdp_plugin_args is not None:
        plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    else:  # accelerate launch: the plugin reads the FSDP_* variables the launcher set
        plugin = FullyShardedDataParallelPlugin()
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate does it on a GPU
    logger.info("FSDP%d on CPU over gloo (accelerate enables FSDP on GPUs only)", plugin.fsdp_version)
    return True


def launch_alone() -> None:
    """``mgm train --deepspeed`` without a launcher: the environment of a world of one process (as the ``deepspeed``
    launcher would set it), else DeepSpeed looks for MPI to find its rank."""
    if "RANK" in os.environ or "LOCAL_RANK" in os.environ:
        return
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    values = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    os.environ.update({**values, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def quiet_deepspeed_comm() -> None:
    """ZeRO calls ``torch.distributed.reduce_scatter_tensor`` and ``all_gather_into_tensor``, which torch now flags as
    deprecated on every call (some 400 FutureWarning lines in a 2-step ZeRO-3 run): those two are ignored."""
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated",
        category=FutureWarning,
    )


def start_deepspeed_comm() -> None:
    """Attach ``deepspeed.comm`` to the running gloo process group (before a ZeRO-3 ``from_pretrained``)."""
    import torch.distributed as dist

    if on_accelerator() or not (dist.is_available() and dist.is_initialized()):
        return
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)


def fsdp_settings(fsdp: str | None, fsdp_config: str | None) -> dict | None:
    """The Trainer's ``fsdp_config`` for ``--fsdp``: the JSON file's settings; checkpoints sharded (one file per rank,
    no gather) unless it says otherwise.  The final model is consolidated all the same (``consolidate_final_save``)."""
    if not fsdp:
        return None
    settings = {}
    if fsdp_config:
        with open(fsdp_config, encoding="utf-8") as f:
            settings = json.load(f)
    # the --fsdp words as fsdp_config entries (the Trainer's own reading of an fsdp string is deprecated)
    for word in fsdp.split():
        if word not in _FSDP_WORDS:
            raise ValueError(f"--fsdp {fsdp!r}: unknown option {word!r}; use {', '.join(_FSDP_WORDS)}")
        settings.update((key, value) for key, value in _FSDP_WORDS[word].items() if key not in settings)
    if "state_dict_type" not in settings and "fsdp_state_dict_type" not in settings:
        settings["state_dict_type"] = "SHARDED_STATE_DICT"
    return settings


#: --fsdp word -> fsdp_config entries (FSDP2); auto_wrap is the Trainer's default wrapping
_FSDP_WORDS = {
    "full_shard": {"reshard_after_forward": True},
    "shard_grad_op": {"reshard_after_forward": False},
    "offload": {"cpu_offload": True},
    "auto_wrap": {},
}


def consolidate_final_save(trainer) -> None:
    """Before the final ``save_model``: FSDP gathers the full state dict (checkpoints stay sharded), so the output is
    a plain ``save_pretrained`` folder.  DeepSpeed consolidates by itself (ZeRO-3: ``stage3_gather_16bit_weights_on_
    model_save`` in the config, checked before training)."""
    if Engine.of_trainer(trainer).is_fsdp:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")


# ---------------------------------------------------------------------------------------------- the engine


@dataclasses.dataclass(frozen=True)
class Engine:
    """A run's distributed engine: DDP (one process included), FSDP or DeepSpeed at a ZeRO stage.

    The rest of the package asks it what differs between engines rather than testing which one it is."""

    kind: str  # "DDP", "FSDP" or "DeepSpeed"
    zero_stage: int | None = None  # DeepSpeed's

    @classmethod
    def deepspeed(cls, zero_stage: int) -> Engine:
        return cls("DeepSpeed", int(zero_stage))

    @classmethod
    def of_trainer(cls, trainer) -> Engine:
        """The engine a Trainer's accelerator runs (after ``enable_fsdp_on_cpu``)."""
        if trainer.is_deepspeed_enabled:
            return cls.deepspeed(trainer.accelerator.state.deepspeed_plugin.zero_stage)
        return FSDP if trainer.is_fsdp_enabled else DDP

    @property
    def name(self) -> str:
        """In words: "DeepSpeed ZeRO-3", "FSDP" or "DDP"."""
        return f"DeepSpeed ZeRO-{self.zero_stage}" if self.is_deepspeed else self.kind

    def __str__(self) -> str:
        return self.name

    @property
    def is_deepspeed(self) -> bool:
        return self.kind == "DeepSpeed"

    @property
    def is_fsdp(self) -> bool:
        return self.kind == "FSDP"

    @property
    def sharded(self) -> bool:
        """Parameters or their state are sharded over the processes: the engine handles unused parameters itself, and
        the Trainer must not touch the (sharded) trainable parameters."""
        return self.kind != "DDP"

    @property
    def gathers_params(self) -> bool:
        """ZeRO-3: the weights are partitioned (while loading, too) and gathered for the forward pass and to save."""
        return self.zero_stage == 3

    @property
    def casts_model(self) -> bool:
        """DeepSpeed casts the whole model to its half type and keeps its own fp32 master weights: the model loads in
        that type, and nothing (LoRA adapters included) is upcast to fp32."""
        return self.is_deepspeed

    @property
    def fp32_parameters(self) -> bool:
        """FSDP keeps fp32 parameters (its mixed-precision policy casts for compute): the model loads in fp32."""
        return self.is_fsdp

    @property
    def checkpoint_layout(self) -> Engine:
        """The engine as its checkpoints show it (``checkpoint_engine``): ZeRO-0, -1 and -2 write the same layout."""
        return Engine.deepspeed(2) if self.is_deepspeed and self.zero_stage < 3 else self


DDP = Engine("DDP")
FSDP = Engine("FSDP")


def run_engine(config) -> Engine:
    """The engine of a run with these settings (``TrainConfig``): DeepSpeed with ``--deepspeed`` (its config's ZeRO
    stage), FSDP with ``--fsdp`` or under ``accelerate launch`` with an FSDP config, else DDP."""
    fsdp = bool(config.fsdp) or accelerate_fsdp()
    if not config.deepspeed:
        return FSDP if fsdp else DDP
    if fsdp:
        raise UserError("choose DeepSpeed or FSDP, not both (--deepspeed under an FSDP accelerate config)")
    return Engine.deepspeed(read_deepspeed_config(config.deepspeed).get("zero_optimization", {}).get("stage", 0))


# ---------------------------------------------------------------------------------------------- checks before training


def read_deepspeed_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError:
        raise UserError(f"DeepSpeed config not found: {path}") from None
    except ValueError as error:
        raise UserError(f"DeepSpeed config {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise UserError(f"DeepSpeed config {path} must be a JSON object")
    return values


def check_deepspeed_config(path: str, values: dict, batch: dict[str, int]) -> None:
    """The batch sizes a DeepSpeed config states (other than "auto") must be the recipe's; ZeRO-3 must gather the
    weights when saving, so the final model is a plain folder."""
    for key, expected in batch.items():
        value = values.get(key, "auto")
        if value != "auto" and value != expected:
            raise UserError(
                f"{path}: {key} is {value} but the recipe makes it {expected} (global batch = per-device batch x "
                f'processes x accumulation): set it to "auto" or change the recipe'
            )
    zero = values.get("zero_optimization", {})
    if Engine.deepspeed(zero.get("stage", 0)).gathers_params and not zero.get(
        "stage3_gather_16bit_weights_on_model_save", False
    ):
        raise UserError(
            f"{path}: ZeRO-3 needs stage3_gather_16bit_weights_on_model_save: true, else the final model is left as "
            "partitions (recipes/distributed/zero3.json has it)"
        )


def checkpoint_engine(checkpoint: str) -> tuple[Engine, int]:
    """The engine and number of processes that wrote a Trainer checkpoint, from its files: DeepSpeed writes
    ``global_step*/`` (ZeRO-3: one ``zero_pp_rank_*_model_states.pt`` per rank), FSDP ``pytorch_model_fsdp*``, and
    each process its own ``rng_state_<rank>.pth`` (one process: ``rng_state.pth``)."""
    names = os.listdir(checkpoint)
    steps = [n for n in names if n.startswith("global_step") and os.path.isdir(os.path.join(checkpoint, n))]
    if steps:
        inner = os.listdir(os.path.join(checkpoint, steps[0]))
        stage3 = any(n.startswith("zero_pp_rank_") and n.endswith("_model_states.pt") for n in inner)
        engine = Engine.deepspeed(3 if stage3 else 2)
    elif any(n.startswith("pytorch_model_fsdp") for n in names):
        engine = FSDP
    else:
        engine = DDP
    ranks = [n for n in names if n.startswith("rng_state_") and n.endswith(".pth")]
    return engine, len(ranks) or 1


def check_resume_engine(checkpoint: str, engine: Engine, processes: int) -> None:
    """Refuse to resume a checkpoint written by another engine or number of processes (its optimizer state, shards and
    data order would not fit)."""
    written, world = checkpoint_engine(checkpoint)
    engine = engine.checkpoint_layout
    if (written, world) != (engine, processes):
        raise UserError(
            f"--resume: {checkpoint} was written by {written} on {world} process(es), this run is {engine} on "
            f"{processes}: resume with the same engine and number of processes, or train into a new --output"
        )
