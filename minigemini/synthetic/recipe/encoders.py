"""CLIP-style pre-training of the two vision encoders on image-caption pairs, for worlds with no pretrained towers.

The paper's encoders arrive CLIP-pretrained (CLIP ViT-L, LAION ConvNeXt-L); where none can be had (the synthetic
world, a new domain) this step gives both towers the same kind of start: each tower's features, *as Mini-Gemini uses
them* (the LR tokens the projector sees, the stages fused into the HR map that mining reads), are mean-pooled,
projected and matched to their caption by a symmetric InfoNCE loss against the other captions of the batch (Radford
et al., 2021).

Captions are read by a small transformer over a word vocabulary built from the captions themselves (it is only a
teacher: it is not kept).  Captions name written words but never spell them, so contrast alone does not teach the HR
tower to read small print: ``pretrain_reading`` does that afterwards.  Resumable: a checkpoint is written atomically
after every epoch; the output is the two towers' weights (``encoders.safetensors``) that
``default_model.build_model(encoders=...)`` places into a Mini-Gemini.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minigemini.configuration import MiniGeminiConfig
from minigemini.data.records import read_records
from minigemini.encoders import HighResEncoder, LowResEncoder
from minigemini.image_processing import MiniGeminiImageProcessor, load_image
from minigemini.precision import check_tower_precision, tower_autocast, tower_device
from minigemini.saving import write_file_atomic, write_json_atomic

__all__ = [
    "ContrastiveTowers",
    "EncoderPretrainConfig",
    "WordVocabulary",
    "optimizer_step",
    "pretrain_encoders",
    "resume",
    "save_checkpoint",
    "warmup_cosine",
]

ENCODERS_FILE = "encoders.safetensors"
_CHECKPOINT = "checkpoint.pt"
_WORD = re.compile(r"[a-z]+|\d+")


@dataclass
class EncoderPretrainConfig:
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    embed_dim: int = 256
    max_words: int = 48
    seed: int = 0
    precision: str = "auto"  # bf16 autocast on a GPU or a CPU with bf16 kernels, else fp32

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.learning_rate <= 0:
            raise ValueError("encoder pre-training needs epochs >= 1, batch_size >= 2 and a positive learning rate")
        check_tower_precision(self.precision)


class WordVocabulary:
    """Lower-case words and whole numbers of the captions -> ids (0 pad, 1 unknown)."""

    def __init__(self, words: list[str]):
        self.words = words
        self.index = {word: i + 2 for i, word in enumerate(words)}

    @classmethod
    def build(cls, texts: list[str]) -> WordVocabulary:
        return cls(sorted({word for text in texts for word in _WORD.findall(text.lower())}))

    def encode(self, texts: list[str], max_words: int) -> torch.Tensor:
        ids = torch.zeros(len(texts), max_words, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [self.index.get(w, 1) for w in _WORD.findall(text.lower())][:max_words]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return ids

    def __len__(self) -> int:
        return len(self.words) + 2


class CaptionEncoder(nn.Module):
    def __init__(self, vocab_size: int, width: int, max_words: int, out_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Parameter(torch.randn(max_words, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, width * 4, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids == 0
        hidden = self.encoder(self.embed(ids) + self.position[: ids.shape[1]], src_key_padding_mask=mask)
        keep = (~mask).unsqueeze(-1).to(hidden.dtype)
        return self.proj((hidden * keep).sum(1) / keep.sum(1).clamp_min(1))


class ContrastiveTowers(nn.Module):
    """The two Mini-Gemini towers with pooled projection heads, and the caption teacher."""

    def __init__(self, config: MiniGeminiConfig, vocab_size: int, embed_dim: int, max_words: int):
        super().__init__()
        self.vision_tower = LowResEncoder(config)
        self.vision_tower_aux = HighResEncoder(config)
        self.lr_head = nn.Linear(config.vision_config.hidden_size, embed_dim)
        self.hr_head = nn.Linear(config.vision_aux_hidden_size, embed_dim)
        self.text = CaptionEncoder(vocab_size, 192, max_words, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, low: torch.Tensor, high: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        text = F.normalize(self.text(ids).float(), dim=-1)
        lr = F.normalize(self.lr_head(self.vision_tower(low).mean(1)).float(), dim=-1)
        # The mean of the fused HR map, without building it: bilinear upsampling keeps each stage's mean (up to the
        # border cells), and the fusion's interpolation is the slowest part of the tower's backward on a CPU.
        pooled = torch.cat([x.mean((2, 3)) for x in self.vision_tower_aux.stage_outputs(high)], dim=1)
        hr = F.normalize(self.hr_head(pooled).float(), dim=-1)
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        target = torch.arange(len(ids), device=ids.device)
        losses = {}
        for name, image in (("lr", lr), ("hr", hr)):
            logits = scale * image @ text.T
            losses[name] = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            losses[f"{name}_acc"] = (logits.argmax(1) == target).float().mean()
        losses["loss"] = losses["lr"] + losses["hr"]
        return losses


def load_caption_pairs(data: list[str], image_folders: list[str], processor: MiniGeminiImageProcessor, progress: bool):
    """Every (image, first answer) pair of LLaVA-format caption files as processed LR / HR tensors (fp16), with the
    captions and the record ids."""
    records, _ = read_records(data, image_folders=image_folders or None)
    low, high, captions, ids = [], [], [], []
    for index, record in enumerate(records):
        if not record.images:
            continue
        pixels = processor(images=[load_image(record.images[0])], return_tensors="pt")
        low.append(pixels["pixel_values"][0].to(torch.float16))
        high.append(pixels["high_res_pixel_values"][0].to(torch.float16))
        captions.append(next(m["content"] for m in record.messages if m["role"] == "assistant"))
        ids.append(record.id)
        if progress and (index + 1) % 2000 == 0:
            print(f"  loaded {index + 1}/{len(records)} images", flush=True)
    if len(captions) < 2:
        raise ValueError(f"encoder pre-training needs at least 2 image-caption pairs in {data}, found {len(captions)}")
    return torch.stack(low), torch.stack(high), captions, ids


def resume(checkpoint: Path, **stateful) -> dict | None:
    """Restore each of ``stateful`` (name -> module, optimizer or scheduler) from the checkpoint file of a tower step,
    saved as {name: state_dict, ...}; returns the checkpoint, or None when there is none yet."""
    if not checkpoint.is_file():
        return None
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for name, target in stateful.items():
        target.load_state_dict(state[name])
    return state


def save_checkpoint(checkpoint: Path, extra: dict, **stateful) -> None:
    """Write (atomically) the checkpoint ``resume`` reads: each of ``stateful``'s state dicts, and ``extra``."""
    state = {**{name: source.state_dict() for name, source in stateful.items()}, **extra}
    write_file_atomic(checkpoint, partial(torch.save, state))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A linear warm-up over ``warmup_steps``, then a cosine decay to 0 at step ``total``."""
    schedule = lambda step: min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def optimizer_step(loss: torch.Tensor, parameters, optimizer, scheduler) -> None:
    """One update of a tower step: backward, gradients clipped to norm 1, the optimizer and the schedule stepped."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def pretrain_encoders(
    model_config: MiniGeminiConfig,
    data: list[str],
    image_folders: list[str],
    output: str | Path,
    config: EncoderPretrainConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train both towers of ``model_config`` contrastively on the captions of ``data``; write
    ``output/encoders.safetensors`` (keys as in MiniGeminiModel: ``vision_tower.*``, ``vision_tower_aux.*``)."""
    config = config or EncoderPretrainConfig()
    config.validate()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if (output / ENCODERS_FILE).is_file():
        print(f"Encoders already pre-trained: {output / ENCODERS_FILE}")
        return output / ENCODERS_FILE
    torch.manual_seed(config.seed)
    processor = MiniGeminiImageProcessor(
        image_size=model_config.vision_config.image_size, image_size_aux=model_config.image_size_aux
    )
    low, high, captions, _ = load_caption_pairs(data, image_folders, processor, progress)
    vocabulary = WordVocabulary.build(captions)
    ids = vocabulary.encode(captions, config.max_words)
    device = tower_device()
    towers = ContrastiveTowers(model_config, len(vocabulary), config.embed_dim, config.max_words).to(device)
    optimizer = torch.optim.AdamW(towers.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = len(captions) // config.batch_size or 1
    scheduler = warmup_cosine(optimizer, config.warmup_steps, steps_per_epoch * config.epochs)
    checkpoint_path = output / _CHECKPOINT
    state = resume(checkpoint_path, towers=towers, optimizer=optimizer, scheduler=scheduler)
    start_epoch = state["epoch"] if state else 0
    if state:
        print(f"Resuming encoder pre-training after epoch {start_epoch}")
    autocast = tower_autocast(config.precision, device)
    print(
        f"Encoder pre-training: {len(captions)} pairs, {len(vocabulary)} words, {config.epochs} epochs x "
        f"{steps_per_epoch} steps of {config.batch_size} on {device.type}",
        flush=True,
    )
    towers.train()
    for epoch in range(start_epoch, config.epochs):
        order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(config.seed + epoch))
        started = time.perf_counter()
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            with autocast:
                losses = towers(low[batch].to(device).float(), high[batch].to(device).float(), ids[batch].to(device))
            optimizer_step(losses["loss"], towers.parameters(), optimizer, scheduler)
            if progress and (step % 10 == 0 or step == steps_per_epoch - 1):
                print(
                    f"  epoch {epoch + 1} step {step + 1}/{steps_per_epoch}  loss {losses['loss'].item():.3f}  "
                    f"batch top-1 LR {losses['lr_acc'].item():.2f} HR {losses['hr_acc'].item():.2f}  "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
        extra = {"epoch": epoch + 1}
        save_checkpoint(checkpoint_path, extra, towers=towers, optimizer=optimizer, scheduler=scheduler)
    _save_towers(towers, output, config)
    checkpoint_path.unlink(missing_ok=True)
    return output / ENCODERS_FILE


def _save_towers(towers: ContrastiveTowers, output: Path, config: EncoderPretrainConfig) -> None:
    """Write the two towers' weights (``encoders.safetensors``, atomically) and the settings that trained them."""
    from safetensors.torch import save_file

    weights = {
        key: value.detach().cpu().contiguous()
        for key, value in towers.state_dict().items()
        if key.startswith(("vision_tower.", "vision_tower_aux."))
    }
    write_file_atomic(output / ENCODERS_FILE, lambda staging: save_file(weights, str(staging)))
    write_json_atomic(output / "pretrain_config.json", asdict(config))
