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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minigemini.configuration import MiniGeminiConfig
from minigemini.encoders import HighResEncoder
from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.precision import check_tower_precision, tower_autocast, tower_device
from minigemini.saving import write_file_atomic, write_json_atomic
from minigemini.synthetic.recipe.encoders import (
    ENCODERS_FILE,
    load_caption_pairs,
    optimizer_step,
    resume,
    save_checkpoint,
)
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


@dataclass(frozen=True)
class _Cells:
    """The HR image in cells of the tower's fused map: a cell's side in pixels, the tower's total stride in cells
    (crops start on it, so their grids match the whole image's), and the sides of the image and of a crop in cells."""

    pixels: int
    stride: int
    side: int
    crop: int

    @classmethod
    def of(cls, model_config: MiniGeminiConfig, crop: int) -> _Cells:
        aux = model_config.vision_aux_config
        pixels, stride = aux.patch_size, 2 ** (len(aux.hidden_sizes) - 1)
        if crop and (crop % (pixels * stride) or crop > model_config.image_size_aux):
            raise ValueError(
                f"crop must be a multiple of the HR tower's stride ({pixels * stride} px) and at most the HR "
                f"image ({model_config.image_size_aux} px), got {crop}"
            )
        side = model_config.image_size_aux // pixels
        return cls(pixels, stride, side, crop // pixels if crop else side)


@dataclass
class _DrawnStrings:
    """The HR pixels of the caption records (N, 3, H, W), each fused-map cell's string class (N, side, side; 0: none,
    ``i + 1``: ``strings[i]``), and the indices of the images with strings to train on and to hold out."""

    high: torch.Tensor
    targets: torch.Tensor
    strings: list[str]
    pool: torch.Tensor
    held_out: torch.Tensor

    @classmethod
    def read(
        cls,
        model_config: MiniGeminiConfig,
        data: list[str],
        cells: _Cells,
        config: ReadingPretrainConfig,
        progress: bool,
    ) -> _DrawnStrings:
        regions = read_caption_regions(data)
        strings = sorted({r["text"] for rs in regions.values() for r in rs if r.get("text")})
        if not strings:
            raise ValueError(
                f'no caption record of {data} has a region with drawn "text": nothing to teach reading with'
            )
        processor = MiniGeminiImageProcessor(
            image_size=model_config.vision_config.image_size, image_size_aux=model_config.image_size_aux
        )
        _, high, _, ids = load_caption_pairs(data, [], processor, progress)
        classes = {s: i + 1 for i, s in enumerate(strings)}
        targets = torch.stack([string_targets(regions.get(key, []), cells.side, classes) for key in ids])
        pool = (targets > 0).flatten(1).any(1).nonzero().flatten()
        held_out = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(config.seed))]
        held_out = held_out[: int(config.holdout * len(pool))]
        pool = pool[~torch.isin(pool, held_out)]  # in order: without a holdout, the same crops as before it existed
        return cls(high, targets, strings, pool, held_out)

    def crops(self, batch: torch.Tensor, cells: _Cells, generator: torch.Generator):
        """Crops of ``cells.crop`` cells around a random string cell of each image, offsets on the stride."""
        pixels, labels = [], []
        for index in batch.tolist():
            drawn = (self.targets[index] > 0).nonzero()
            row, column = drawn[torch.randint(len(drawn), (1,), generator=generator)][0].tolist()
            offsets = []
            for centre in (row, column):
                valid = [
                    o
                    for o in range(0, self.targets.shape[-1] - cells.crop + 1, cells.stride)
                    if o <= centre < o + cells.crop
                ]
                offsets.append(valid[int(torch.randint(len(valid), (1,), generator=generator))])
            top, left = offsets
            rows, columns = slice(top, top + cells.crop), slice(left, left + cells.crop)
            pixels.append(self.high[index, :, _pixels(rows, cells.pixels), _pixels(columns, cells.pixels)])
            labels.append(self.targets[index, rows, columns])
        return torch.stack(pixels).float(), torch.stack(labels)


def _pixels(cells: slice, cell_pixels: int) -> slice:
    return slice(cells.start * cell_pixels, cells.stop * cell_pixels)


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
    from safetensors.torch import load_file

    config = config or ReadingPretrainConfig()
    config.validate()
    output = Path(output)
    if (output / ENCODERS_FILE).is_file():
        print(f"HR tower already taught to read: {output / ENCODERS_FILE}")
        return output / ENCODERS_FILE
    cells = _Cells.of(model_config, config.crop)
    drawn = _DrawnStrings.read(model_config, data, cells, config, progress)
    torch.manual_seed(config.seed)
    reader = StringReader(model_config, len(drawn.strings) + 1)
    weights = load_file(str(encoders))
    reader.tower.load_state_dict({k[len(_TOWER) :]: v for k, v in weights.items() if k.startswith(_TOWER)})
    device = tower_device()
    reader.to(device)
    autocast = tower_autocast(config.precision, device)
    _train_reader(reader, drawn, cells, config, output, device, autocast, progress)
    if len(drawn.held_out):
        with autocast:
            metrics = named_strings(
                reader, drawn.high[drawn.held_out], drawn.targets[drawn.held_out], drawn.strings, device=device
            )
        print("Held-out strings named: " + ", ".join(f"{k} {v:.1%}" for k, v in metrics.items()), flush=True)
        write_json_atomic(output / "reading_metrics.json", {"held_out_images": len(drawn.held_out), **metrics})
    _save_tower(reader, weights, output, config)
    (output / _CHECKPOINT).unlink(missing_ok=True)
    return output / ENCODERS_FILE


def _train_reader(
    reader: StringReader,
    drawn: _DrawnStrings,
    cells: _Cells,
    config: ReadingPretrainConfig,
    output: Path,
    device: torch.device,
    autocast,
    progress: bool,
) -> None:
    """Train ``reader`` on crops of ``drawn``'s training images, resuming from (and checkpointing into) ``output``."""
    optimizer = torch.optim.AdamW(reader.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps))
    generator = torch.Generator().manual_seed(config.seed)
    checkpoint_path = output / _CHECKPOINT
    state = resume(checkpoint_path, reader=reader, optimizer=optimizer, scheduler=scheduler)
    start = state["step"] if state else 0
    if state:
        generator.set_state(state["generator"])
        print(f"Resuming reading pre-training after step {start}")
    class_weight = torch.ones(len(drawn.strings) + 1, device=device)
    class_weight[0] = config.none_weight
    print(
        f"Reading pre-training: {len(drawn.pool)} images with drawn strings, {len(drawn.strings)} distinct strings, "
        f"{config.steps} steps of {config.batch_size} crops of {cells.crop * cells.pixels} px on {device.type}",
        flush=True,
    )
    output.mkdir(parents=True, exist_ok=True)
    reader.train()
    started = time.perf_counter()
    for step in range(start, config.steps):
        batch = drawn.pool[torch.randint(len(drawn.pool), (config.batch_size,), generator=generator)]
        pixels, labels = drawn.crops(batch, cells, generator)
        pixels, labels = pixels.to(device), labels.to(device)
        with autocast:
            logits = reader(pixels)
        loss = F.cross_entropy(logits.float(), labels.long(), weight=class_weight)
        optimizer_step(loss, reader.parameters(), optimizer, scheduler)
        if progress and (step % 50 == 0 or step + 1 == config.steps):
            named = labels > 0
            accuracy = ((logits.argmax(1) == labels) & named).sum() / named.sum().clamp_min(1)
            print(
                f"  step {step + 1}/{config.steps}  loss {loss.item():.3f}  string cells named {accuracy.item():.2f}  "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        if (step + 1) % config.checkpoint_steps == 0 and step + 1 < config.steps:
            extra = {"generator": generator.get_state(), "step": step + 1}
            save_checkpoint(checkpoint_path, extra, reader=reader, optimizer=optimizer, scheduler=scheduler)


def _save_tower(reader: StringReader, weights: dict, output: Path, config: ReadingPretrainConfig) -> None:
    """Write ``weights`` with the reader's HR tower in place of theirs (``encoders.safetensors``, atomically) and the
    settings that trained it."""
    from safetensors.torch import save_file

    tower = {_TOWER + k: v.detach().cpu().contiguous() for k, v in reader.tower.state_dict().items()}
    result = {**{k: v for k, v in weights.items() if not k.startswith(_TOWER)}, **tower}
    write_file_atomic(output / ENCODERS_FILE, lambda staging: save_file(result, str(staging)))
    write_json_atomic(output / "reading_config.json", asdict(config))
