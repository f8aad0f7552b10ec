"""Teach the high-resolution tower to read the strings drawn in an image: a step after the CLIP-style pre-training.

Captions name the words written in an image but never spell them, and contrast alone left the HR tower unable to tell
them apart (research/README.md: an earlier default model's tokens named the written word at chance).  Here every cell of
the tower's fused map that a caption record's region says a string is drawn on (``"text"``, data/regions.py) is
trained to name that string -- one class per distinct string of the training data -- by a 1x1 head over the fused
map (computed per stage and upsampled after the head: the same logits without the wide map); cells with no string
are a low-weight "none" class.  The head is a teacher and is not kept: what stays is a tower whose features at the
string's cells tell it from the others, for mining to pass on.  ``holdout`` images with strings are kept out of
training and the share of their strings the head names is reported at the end (``reading_metrics.json``).

Training samples crops around strings, aligned to the tower's total stride so their grids match the whole image's: a
96-pixel crop costs a quarter of a 192-pixel image and always holds a string, so the same time names more held-out
strings than whole images do (research/README.md).  Resumable: a checkpoint is written atomically every
``checkpoint_steps``; the output is an ``encoders.safetensors`` like the input's, the HR tower replaced.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minigemini.configuration import MiniGeminiConfig
from minigemini.encoders import HighResEncoder
from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.precision import check_tower_precision, tower_autocast, tower_device
from minigemini.saving import write_file_atomic, write_json_atomic
from minigemini.synthetic.recipe.encoders import ENCODERS_FILE, load_caption_pairs, resume
from minigemini.synthetic.regions import read_caption_regions, string_targets

__all__ = ["ReadingPretrainConfig", "pretrain_reading"]

_CHECKPOINT = "checkpoint.pt"
_TOWER = "vision_tower_aux."


@dataclass
class ReadingPretrainConfig:
    steps: int = 2000
    batch_size: int = 64
    crop: int = 96  # pixels of the HR image; a multiple of the tower's total stride (0: whole images)
    learning_rate: float = 2e-3  # constant after warm-up: the target is learned from scratch
    warmup_steps: int = 20
    weight_decay: float = 0.01
    none_weight: float = 0.1  # most cells show no string
    holdout: float = 0.0  # share of the images with strings kept out of training to measure reading on
    checkpoint_steps: int = 500
    seed: int = 0
    precision: str = "auto"  # bf16 autocast on a GPU or a CPU with bf16 kernels, else fp32

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.checkpoint_steps < 1:
            raise ValueError(
                "reading pre-training needs steps, batch_size and checkpoint_steps >= 1 and a positive rate"
            )
        if self.crop < 0 or not 0 < self.none_weight <= 1:
            raise ValueError(f"crop must be >= 0 and none_weight in (0, 1], got {self.crop} and {self.none_weight}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        check_tower_precision(self.precision)


class StringReader(nn.Module):
    """The HR tower with a 1x1 string head over its fused map."""

    def __init__(self, config: MiniGeminiConfig, classes: int):
        super().__init__()
        self.tower = HighResEncoder(config)
        self.heads = nn.ModuleList(nn.Conv2d(c, classes, 1) for c in config.vision_aux_config.hidden_sizes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> string logits (B, classes, H / 4, W / 4) at the fused map's cells."""
        logits = [head(x) for head, x in zip(self.heads, self.tower.stage_outputs(pixels))]
        size = logits[0].shape[-2:]
        return logits[0] + sum(F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in logits[1:])


@torch.no_grad()
def named_strings(reader: StringReader, high, targets, strings, batch_size: int = 64, device="cpu") -> dict[str, float]:
    """Share of the drawn words and numbers of ``high`` / ``targets`` the reader (on ``device``) names (logits averaged
    over the string's cells)."""
    reader.eval()
    hits: dict[str, list[bool]] = {"words": [], "numbers": []}
    for start in range(0, len(high), batch_size):
        logits = reader(high[start : start + batch_size].to(device).float()).cpu()
        for image, target in enumerate(targets[start : start + batch_size]):
            for label in target.unique().tolist():
                if label:
                    named = logits[image][:, target == label].mean(-1).argmax().item() == label
                    hits["numbers" if strings[label - 1].isdigit() else "words"].append(named)
    reader.train()
    return {kind: sum(h) / len(h) for kind, h in hits.items() if h}


def _crops(high, targets, batch, crop_cells, stride_cells, cell_pixels, generator):
    """Crops of ``crop_cells`` fused-map cells around a random string cell of each image, offsets on the stride."""
    pixels, labels = [], []
    for index in batch.tolist():
        drawn = (targets[index] > 0).nonzero()
        row, column = drawn[torch.randint(len(drawn), (1,), generator=generator)][0].tolist()
        offsets = []
        for centre in (row, column):
            valid = [
                o for o in range(0, targets.shape[-1] - crop_cells + 1, stride_cells) if o <= centre < o + crop_cells
            ]
            offsets.append(valid[int(torch.randint(len(valid), (1,), generator=generator))])
        top, left = offsets
        pixels.append(high[index, :, top * cell_pixels : (top + crop_cells) * cell_pixels,
                           left * cell_pixels : (left + crop_cells) * cell_pixels])  # fmt: skip
        labels.append(targets[index, top : top + crop_cells, left : left + crop_cells])
    return torch.stack(pixels).float(), torch.stack(labels)


def pretrain_reading(
    model_config: MiniGeminiConfig,
    encoders: str | Path,
    data: list[str],
    output: str | Path,
    config: ReadingPretrainConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train the HR tower of ``encoders`` (a file of ``pretrain_encoders``) on the drawn strings of ``data``'s
    regions; write ``output/encoders.safetensors`` (the LR tower copied unchanged)."""
    from safetensors.torch import load_file, save_file

    config = config or ReadingPretrainConfig()
    config.validate()
    output = Path(output)
    if (output / ENCODERS_FILE).is_file():
        print(f"HR tower already taught to read: {output / ENCODERS_FILE}")
        return output / ENCODERS_FILE
    aux = model_config.vision_aux_config
    cell_pixels = aux.patch_size
    stride_cells = 2 ** (len(aux.hidden_sizes) - 1)
    side = model_config.image_size_aux // cell_pixels
    if config.crop and (config.crop % (cell_pixels * stride_cells) or config.crop > model_config.image_size_aux):
        raise ValueError(
            f"crop must be a multiple of the HR tower's stride ({cell_pixels * stride_cells} px) and at most the HR "
            f"image ({model_config.image_size_aux} px), got {config.crop}"
        )
    processor = MiniGeminiImageProcessor(
        image_size=model_config.vision_config.image_size, image_size_aux=model_config.image_size_aux
    )
    regions = read_caption_regions(data)
    strings = sorted({r["text"] for rs in regions.values() for r in rs if r.get("text")})
    if not strings:
        raise ValueError(f'no caption record of {data} has a region with drawn "text": nothing to teach reading with')
    _, high, _, ids = load_caption_pairs(data, [], processor, progress)
    classes = {s: i + 1 for i, s in enumerate(strings)}
    targets = torch.stack([string_targets(regions.get(key, []), side, classes) for key in ids])
    pool = (targets > 0).flatten(1).any(1).nonzero().flatten()
    held_out = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(config.seed))]
    held_out = held_out[: int(config.holdout * len(pool))]
    pool = pool[~torch.isin(pool, held_out)]  # in order: without a holdout, the same crops as before it existed

    torch.manual_seed(config.seed)
    reader = StringReader(model_config, len(strings) + 1)
    weights = load_file(str(encoders))
    reader.tower.load_state_dict({k[len(_TOWER) :]: v for k, v in weights.items() if k.startswith(_TOWER)})
    device = tower_device()
    reader.to(device)
    optimizer = torch.optim.AdamW(reader.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps))
    generator = torch.Generator().manual_seed(config.seed)
    checkpoint_path = output / _CHECKPOINT
    state = resume(checkpoint_path, reader=reader, optimizer=optimizer, scheduler=scheduler)
    start = state["step"] if state else 0
    if state:
        generator.set_state(state["generator"])
        print(f"Resuming reading pre-training after step {start}")
    class_weight = torch.ones(len(strings) + 1, device=device)
    class_weight[0] = config.none_weight
    autocast = tower_autocast(config.precision, device)
    crop_cells = config.crop // cell_pixels if config.crop else side
    print(
        f"Reading pre-training: {len(pool)} images with drawn strings, {len(strings)} distinct strings, "
        f"{config.steps} steps of {config.batch_size} crops of {crop_cells * cell_pixels} px on {device.type}",
        flush=True,
    )
    output.mkdir(parents=True, exist_ok=True)
    reader.train()
    started = time.perf_counter()
    for step in range(start, config.steps):
        batch = pool[torch.randint(len(pool), (config.batch_size,), generator=generator)]
        pixels, labels = _crops(high, targets, batch, crop_cells, stride_cells, cell_pixels, generator)
        pixels, labels = pixels.to(device), labels.to(device)
        with autocast:
            logits = reader(pixels)
        loss = F.cross_entropy(logits.float(), labels.long(), weight=class_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if progress and (step % 50 == 0 or step + 1 == config.steps):
            drawn = labels > 0
            accuracy = ((logits.argmax(1) == labels) & drawn).sum() / drawn.sum().clamp_min(1)
            print(
                f"  step {step + 1}/{config.steps}  loss {loss.item():.3f}  string cells named {accuracy.item():.2f}  "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        if (step + 1) % config.checkpoint_steps == 0 and step + 1 < config.steps:
            state = {"reader": reader.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "step": step + 1}  # fmt: skip
            write_file_atomic(checkpoint_path, partial(torch.save, state))
    if len(held_out):
        with autocast:
            metrics = named_strings(reader, high[held_out], targets[held_out], strings, device=device)
        print("Held-out strings named: " + ", ".join(f"{k} {v:.1%}" for k, v in metrics.items()), flush=True)
        write_json_atomic(output / "reading_metrics.json", {"held_out_images": len(held_out), **metrics})
    tower = {_TOWER + k: v.detach().cpu().contiguous() for k, v in reader.tower.state_dict().items()}
    result = {**{k: v for k, v in weights.items() if not k.startswith(_TOWER)}, **tower}
    write_file_atomic(output / ENCODERS_FILE, lambda staging: save_file(result, str(staging)))
    write_json_atomic(output / "reading_config.json", asdict(config))
    checkpoint_path.unlink(missing_ok=True)
    return output / ENCODERS_FILE
