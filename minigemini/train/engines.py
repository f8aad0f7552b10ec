"""The distributed engines on a machine without an accelerator: DDP, FSDP and DeepSpeed ZeRO over gloo on CPU.

The Trainer and accelerate drive every engine; two gaps keep them from running on a CPU, closed here:

- accelerate turns FSDP on only for GPU-like devices: with ``use_cpu`` (the Trainer's choice on a CPU) a ``--fsdp``
  run, or an ``accelerate launch --config_file fsdp.yaml`` one, would silently train as plain DDP.  torch's FSDP2
  (``fully_shard``) shards on CPU over gloo, so the accelerator's state is switched to FSDP with the same plugin
  (``enable_fsdp_on_cpu``, called by ``MiniGeminiTrainer`` right after it creates its accelerator).
- under ZeRO-3 ``from_pretrained`` partitions the weights while loading (``deepspeed.zero.Init``) and sizes its batch
  check by ``deepspeed.comm``'s world, which on a CPU nobody has started yet (accelerate starts it on GPUs only):
  ``start_deepspeed_comm`` attaches it to the gloo process group the Trainer's arguments started.
"""

from __future__ import annotations

import json
import logging
import os

import torch

__all__ = [
    "consolidate_final_save",
    "enable_fsdp_on_cpu",
    "fsdp_requested",
    "fsdp_settings",
    "on_accelerator",
    "start_deepspeed_comm",
]

logger = logging.getLogger(__name__)


def on_accelerator() -> bool:
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def fsdp_requested(args) -> bool:
    """FSDP asked for by the Trainer's ``fsdp`` option or by ``accelerate launch`` with an FSDP config."""
    return args.fsdp_plugin_args is not None or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


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
    if "state_dict_type" not in settings and "fsdp_state_dict_type" not in settings:
        settings["state_dict_type"] = "SHARDED_STATE_DICT"
    return settings


def consolidate_final_save(trainer) -> None:
    """Before the final ``save_model``: FSDP gathers the full state dict (checkpoints stay sharded), so the output is
    a plain ``save_pretrained`` folder.  DeepSpeed consolidates by itself (ZeRO-3: ``stage3_gather_16bit_weights_on_
    model_save`` in the config, checked before training)."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
