"""Visual tokens aimed at the LLM's word embeddings: a cheap step between initialisation and stage 1.

Stage 1 teaches the projector the LLM's language through the LLM itself: every sample costs a forward and backward
pass of the whole LLM, and the signal reaching the vision side through a frozen LLM is weak.  On a small machine with
towers trained from scratch that is too slow to get anywhere (measured: the first default model answered at chance).
This step points the vision side the same way for the cost of the towers alone: the projected visual tokens of each
image are scored (cosine) against the LLM's frozen input embeddings of the words of its caption, and the towers,
mining and projector are trained so that every caption word is resembled by some visual token (multi-label, max over
the tokens) and no absent word is, at the norm of a word embedding.  The LLM then starts stage 1 reading an image's
tokens roughly as it would read words for what is in it.

Words present in more than half of the captions ("a", "on", "background") say nothing about one image and are not
targets.  The output is a whole model folder (like ``init``), written atomically when the step completes.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..image_processing import MiniGeminiImageProcessor

__all__ = ["WordAlignmentConfig", "align_visual_tokens", "caption_targets", "recall_at_own_k", "token_word_similarity"]

_WORD = re.compile(r"[a-z]+|\d+")


@dataclass
class WordAlignmentConfig:
    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_steps: int = 10
    norm_weight: float = 0.1  # keeps the tokens at the length of a word embedding
    max_word_share: float = 0.5  # words in more captions than this are not targets
    seed: int = 0
    precision: str = "bf16"

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.learning_rate <= 0:
            raise ValueError("word alignment needs epochs >= 1, batch_size >= 2 and a positive learning rate")
        if not 0 < self.max_word_share <= 1:
            raise ValueError(f"max_word_share must be in (0, 1], got {self.max_word_share}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be bf16 or fp32, got {self.precision!r}")


def caption_targets(captions: list[str], tokenizer, max_word_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidate token ids (C,), multi-hot targets (N, C)): the LLM tokens of each caption's informative words,
    each word tokenised as it appears inside a sentence (with its leading space)."""
    words_per_caption = [set(_WORD.findall(caption.lower())) for caption in captions]
    frequency: dict[str, int] = {}
    for words in words_per_caption:
        for word in words:
            frequency[word] = frequency.get(word, 0) + 1
    kept = sorted(w for w, n in frequency.items() if n <= max_word_share * len(captions))
    if not kept:
        raise ValueError("no caption word is specific to some images: nothing to align the visual tokens to")
    word_tokens = {}
    for word in kept:  # numbers become a space token and digits: the space says nothing
        tokens = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        word_tokens[word] = [t for t in tokens if tokenizer.decode([t]).strip()]
    candidates = sorted({t for tokens in word_tokens.values() for t in tokens})
    column = {t: i for i, t in enumerate(candidates)}
    targets = torch.zeros(len(captions), len(candidates))
    for row, words in enumerate(words_per_caption):
        for word in words & word_tokens.keys():
            targets[row, [column[t] for t in word_tokens[word]]] = 1
    return torch.tensor(candidates), targets


def align_visual_tokens(
    model_dir: str | Path,
    data: list[str],
    output: str | Path,
    config: WordAlignmentConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train the vision side of the Mini-Gemini in ``model_dir`` on the captions of ``data`` (LLaVA format) as
    described above; write the whole model to ``output``.  Returns ``output``."""
    from ..modeling import MiniGeminiForConditionalGeneration
    from ..processing import MiniGeminiProcessor
    from ..saving import save_model_and_processor
    from .pretrain_encoders import load_caption_pairs

    config = config or WordAlignmentConfig()
    config.validate()
    output = Path(output)
    if (output / "config.json").is_file():
        print(f"Visual tokens already aligned: {output}")
        return output
    torch.manual_seed(config.seed)
    model = MiniGeminiForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32)
    processor = MiniGeminiProcessor.from_pretrained(str(model_dir))
    image_processor = MiniGeminiImageProcessor(
        image_size=model.config.vision_config.image_size,
        image_size_aux=model.config.image_size_aux,
        image_grid=model.config.image_grid,
        image_global=model.config.image_global,
    )
    low, high, captions = load_caption_pairs(data, [], image_processor, progress)
    candidates, targets = caption_targets(captions, processor.tokenizer, config.max_word_share)
    embeddings = model.get_input_embeddings().weight.detach()
    words = F.normalize(embeddings[candidates].float(), dim=-1)
    word_norm = embeddings[: len(embeddings) - 1].norm(dim=-1).mean()  # the <image> row (last, zero) left out

    model.requires_grad_(False)
    vision = [m for m in (model.model.vision_tower, model.model.vision_tower_aux, model.model.mining,
                          model.model.mm_projector) if m is not None]  # fmt: skip
    for module in vision:
        module.requires_grad_(True)
    scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    bias = torch.nn.Parameter(torch.tensor(-5.0))
    parameters = [p for m in vision for p in m.parameters()] + [scale, bias]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    steps_per_epoch = len(captions) // config.batch_size or 1
    total = steps_per_epoch * config.epochs
    schedule = lambda step: min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16")
    print(
        f"Word alignment: {len(captions)} images, {len(candidates)} word tokens, {config.epochs} epoch(s) x "
        f"{steps_per_epoch} steps of {config.batch_size}",
        flush=True,
    )
    model.train()
    started = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(config.seed + epoch))
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            with autocast:
                tokens, similarity = token_word_similarity(model, low[batch], high[batch], words)
            logits = scale.exp() * similarity + bias
            match = F.binary_cross_entropy_with_logits(logits, targets[batch])
            length = ((tokens.norm(dim=-1) / word_norm - 1) ** 2).mean()
            loss = match + config.norm_weight * length
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if progress and (step % 10 == 0 or step == steps_per_epoch - 1):
                recall = recall_at_own_k(logits.detach(), targets[batch])
                print(
                    f"  epoch {epoch + 1} step {step + 1}/{steps_per_epoch}  loss {match.item():.4f}  "
                    f"length {length.item():.3f}  word recall {recall:.2f}  ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    model.eval()
    save_model_and_processor(model, processor, output)
    return output


def token_word_similarity(model, low: torch.Tensor, high: torch.Tensor, words: torch.Tensor):
    """(visual tokens (B, T, D) in fp32, each candidate word's best cosine over the tokens (B, C)); ``words`` are
    unit-length word embeddings (C, D)."""
    tokens = model.model.get_image_features(low.float(), high.float()).float()
    return tokens, (F.normalize(tokens, dim=-1) @ words.T).amax(dim=1)


def recall_at_own_k(logits: torch.Tensor, wanted: torch.Tensor) -> float:
    """Mean over images of the share of its wanted tokens among its k best scores, k = how many it wants."""
    hits = []
    for row, want in zip(logits, wanted):
        k = int(want.sum())
        if k:
            hits.append(want[row.topk(k).indices].mean().item())
    return sum(hits) / max(1, len(hits))
