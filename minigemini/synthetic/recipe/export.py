"""The default model's committed form (``minigemini/assets/default_model``), written from a LoRA run and unpacked
back into one to train on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from minigemini.saving import save_model_and_processor, write_directory_atomically
from minigemini.synthetic.default_model import ADAPTER_DIR, DEFAULT_MODEL_DIR, VISION_WEIGHTS, is_llm_key, without_lora
from minigemini.train.lora import load_lora
from minigemini.train.stages import MULTIMODAL_MODULES

__all__ = ["export_default_model", "unpack_default_model"]


def export_default_model(trained: str | Path, destination: str | Path = DEFAULT_MODEL_DIR) -> Path:
    """Write the committed form of a model trained with ``--lora``: config, the non-LLM weights (fp16)
    and the LoRA weights of the LLM (fp16, without the modules PEFT saved in full, which are in the first file)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    trained = Path(trained)
    peft_model = load_lora(str(trained))
    adapter_weights = {
        k: v.to(torch.float16).contiguous() for k, v in get_peft_model_state_dict(peft_model).items() if "lora_" in k
    }
    adapter_config = peft_model.peft_config["default"].to_dict()
    adapter_config.update(base_model_name_or_path=None, modules_to_save=None)
    base = peft_model.get_base_model()
    # the base's non-LLM modules, with PEFT's trained copies (modules_to_save) swapped in
    vision = {}
    for key, value in peft_model.state_dict().items():
        clean = key.removeprefix("base_model.model.")
        if "lora_" in clean or "original_module" in clean:
            continue
        clean = clean.replace(".modules_to_save.default", "")
        if not is_llm_key(clean):
            vision[clean] = value.to(torch.float16).contiguous()

    def write(folder: Path) -> None:
        base.config.save_pretrained(folder)  # the processor is rebuilt from it and the LLM's tokenizer at load
        save_file(vision, str(folder / VISION_WEIGHTS))
        (folder / ADAPTER_DIR).mkdir()
        save_file(adapter_weights, str(folder / ADAPTER_DIR / "adapter_model.safetensors"))
        text = json.dumps(adapter_config, indent=1, default=lambda v: sorted(v) if isinstance(v, set) else str(v))
        (folder / ADAPTER_DIR / "adapter_config.json").write_text(text, encoding="utf-8")

    # Write the new export beside the old one and swap them only once it is complete: a failed export keeps the old.
    destination = Path(destination)
    staged = write_directory_atomically(destination.with_name(f".{destination.name}.new"), write)
    if destination.exists():
        shutil.rmtree(destination)
    staged.rename(destination)
    return destination


def unpack_default_model(directory: str | Path, output: str | Path, llm_dir: str | Path | None = None) -> Path:
    """An export as a LoRA stage's output, to train on (``mgm train --lora --model OUTPUT/adapter``): ``OUTPUT/base``,
    a plain checkpoint (the LLM, the exported towers, mining and projector), and ``OUTPUT/adapter``, the exported LoRA
    naming that base, mining and projector among the modules it trains and saves.  What such a stage writes exports
    again with ``export_default_model``.  Returns the adapter folder; a failed unpack leaves nothing at ``output``."""
    from safetensors.torch import load_file, save_file

    directory, output = Path(directory), Path(output).resolve()
    model, processor = without_lora(directory, llm_dir, hd=False)
    config = json.loads((directory / ADAPTER_DIR / "adapter_config.json").read_text(encoding="utf-8"))
    config.update(base_model_name_or_path=str(output / "base"), modules_to_save=list(MULTIMODAL_MODULES))
    weights = load_file(str(directory / ADAPTER_DIR / "adapter_model.safetensors"))
    for key, value in model.state_dict().items():  # PEFT loads modules_to_save from the adapter file too
        if key.split(".")[1] in MULTIMODAL_MODULES:
            weights[f"base_model.model.{key}"] = value

    def write(folder: Path) -> None:
        save_model_and_processor(model, processor, folder / "base")
        (folder / ADAPTER_DIR).mkdir()
        (folder / ADAPTER_DIR / "adapter_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        save_file(weights, str(folder / ADAPTER_DIR / "adapter_model.safetensors"))
        processor.save_pretrained(folder / ADAPTER_DIR)

    write_directory_atomically(output, write)
    return output / ADAPTER_DIR
