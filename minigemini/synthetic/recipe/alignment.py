"""Visual tokens aimed at the LLM's word embeddings: a cheap step between initialisation and stage 1.

Stage 1 teaches the projector the LLM's language through the LLM itself: every sample costs a forward and backward
pass of the whole LLM, and the signal reaching the vision side through a frozen LLM is weak.  On a small machine with
towers trained from scratch that is too slow to get anywhere (the first default model answered at chance).
This step points the vision side the same way for the cost of the towers alone: the projected visual tokens of each
image are scored (cosine) against the LLM's frozen input embeddings of the words of its caption, and the towers,
mining and projector are trained so that every caption word is resembled by some visual token (multi-label, max over
the tokens) and no absent word is, at the norm of a word embedding.  The LLM then starts stage 1 reading an image's
tokens roughly as it would read words for what is in it.

Words present in more than half of the captions ("a", "on", "background") say nothing about one image and are not
targets.  The output is a whole model folder (like ``init``), written atomically when the step completes.

Optionally (``region_weight`` > 0), caption records that say *where* things are -- ``"regions": [{"box": [left, top,
right, bottom], "words": [...]}]``, box in fractions of the image; the synthetic world writes them -- also train the
visual tokens whose patch a region covers to resemble that region's words and no others ("red", "star", "1", "top",
"left" on the red star's tokens), so the tokens carry which words belong together; tokens no region covers are left
to the image-level objective.  The tokens then carry their region's words, and with the towers left as aligned in
stage 2 position answers rise from near chance (research/README.md); the recipe turns it on (``region_weight: 1.0``).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.precision import check_tower_precision, tower_autocast, tower_device
from minigemini.synthetic.regions import read_caption_regions

__all__ = [
    "WordAlignmentConfig",
    "align_visual_tokens",
    "caption_targets",
    "covered_tokens",
    "recall_at_own_k",
    "region_targets",
    "token_word_similarity",
    "word_tokens",
]

_WORD = re.compile(r"[a-z]+|\d+")


@dataclass
class WordAlignmentConfig:
    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_steps: int = 10
    norm_weight: float = 0.1  # keeps the tokens at the length of a word embedding
    max_word_share: float = 0.5  # words in more captions than this are not targets
    region_weight: float = 0.0  # weight of the per-token objective on captions with regions (0: off)
    seed: int = 0
    precision: str = "auto"  # bf16 autocast on a GPU or a CPU with bf16 kernels, else fp32

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.learning_rate <= 0:
            raise ValueError("word alignment needs epochs >= 1, batch_size >= 2 and a positive learning rate")
        if self.region_weight < 0:
            raise ValueError(f"region_weight must be >= 0, got {self.region_weight}")
        if not 0 < self.max_word_share <= 1:
            raise ValueError(f"max_word_share must be in (0, 1], got {self.max_word_share}")
        check_tower_precision(self.precision)


def word_tokens(word: str, tokenizer, bare: bool = False) -> list[int]:
    """The LLM tokens of ``word`` inside a sentence (leading space; numbers become a space token and digits: the space
    says nothing) and with ``bare``, when it is one token, as it starts an answer (no space)."""
    tokens = [t for t in tokenizer(" " + word, add_special_tokens=False)["input_ids"] if tokenizer.decode([t]).strip()]
    alone = tokenizer(word, add_special_tokens=False)["input_ids"] if bare else []
    return sorted(set(tokens + (alone if len(alone) == 1 else [])))


def caption_targets(
    captions: list[str], tokenizer, max_word_share: float, region_words: set[str] = frozenset()
) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidate token ids (C,), multi-hot targets (N, C)): the LLM tokens of each caption's informative words.
    ``region_words`` (words of regions) are candidates too, however common."""
    words_per_caption = [set(_WORD.findall(caption.lower())) for caption in captions]
    frequency: dict[str, int] = {}
    for words in words_per_caption:
        for word in words:
            frequency[word] = frequency.get(word, 0) + 1
    kept = sorted(w for w, n in frequency.items() if n <= max_word_share * len(captions))
    if not kept:
        raise ValueError("no caption word is specific to some images: nothing to align the visual tokens to")
    tokens_of = {word: word_tokens(word, tokenizer) for word in kept}
    for word in region_words:  # a region's words are short answers too: their answer-start form as well
        tokens_of[word] = sorted({*tokens_of.get(word, []), *word_tokens(word, tokenizer, bare=True)})
    candidates = sorted({t for tokens in tokens_of.values() for t in tokens})
    column = {t: i for i, t in enumerate(candidates)}
    targets = torch.zeros(len(captions), len(candidates))
    for row, words in enumerate(words_per_caption):
        for word in words & set(kept):
            targets[row, [column[t] for t in tokens_of[word]]] = 1
    return torch.tensor(candidates), targets


def covered_tokens(box: list[float], side: int, min_overlap: float = 0.25) -> torch.Tensor:
    """Indices (row-major) of the tokens of a ``side`` x ``side`` grid whose patch overlaps ``box`` (fractions of
    the image) by at least ``min_overlap`` of the smaller of the two areas."""
    edges = torch.arange(side + 1) / side
    left, top, right, bottom = (float(v) for v in box)
    width = (torch.minimum(edges[1:], torch.tensor(right)) - torch.maximum(edges[:-1], torch.tensor(left))).clamp(0)
    height = (torch.minimum(edges[1:], torch.tensor(bottom)) - torch.maximum(edges[:-1], torch.tensor(top))).clamp(0)
    overlap = height[:, None] * width[None, :]
    smaller = min(1 / side**2, max(right - left, 0) * max(bottom - top, 0))
    if smaller <= 0:
        return torch.empty(0, dtype=torch.long)
    return (overlap.flatten() >= min_overlap * smaller).nonzero().flatten()


def region_targets(regions: list[dict], side: int, candidates: torch.Tensor, tokenizer) -> torch.Tensor:
    """Multi-hot targets (side * side, C), boolean, of one image's tokens from its regions (zero rows: no region)."""
    column = {int(t): i for i, t in enumerate(candidates)}
    targets = torch.zeros(side * side, len(candidates), dtype=torch.bool)
    for region in regions:
        tokens = covered_tokens(region["box"], side)
        words = [str(word).lower() for word in region["words"]]
        columns = [column[t] for word in words for t in word_tokens(word, tokenizer, bare=True)]
        if len(tokens) and columns:
            targets[tokens[:, None], torch.tensor(columns)[None, :]] = True
    return targets


def align_visual_tokens(
    model_dir: str | Path,
    data: list[str],
    output: str | Path,
    config: WordAlignmentConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train the vision side of the Mini-Gemini in ``model_dir`` on the captions of ``data`` (LLaVA format) as
    described above; write the whole model to ``output``.  Returns ``output``."""
    from minigemini.modeling import MiniGeminiForConditionalGeneration
    from minigemini.processing import MiniGeminiProcessor
    from minigemini.saving import save_model_and_processor
    from minigemini.synthetic.recipe.encoders import load_caption_pairs

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
    low, high, captions, ids = load_caption_pairs(data, [], image_processor, progress)
    regions = read_caption_regions(data) if config.region_weight else {}
    if model.config.image_grid != 1 or model.config.image_global:  # HD views: tokens are not one grid on the image
        regions = {}
    device = tower_device()
    objective = _WordObjective(model, processor.tokenizer, captions, ids, regions, config, device)
    _train_vision_side(model, objective, low, high, config, device, progress)
    model.eval().cpu()
    save_model_and_processor(model, processor, output)
    return output


class _WordObjective:
    """Each image's visual tokens scored against the LLM's embeddings of the candidate words, as a learned scale and
    bias over the cosine: the caption loss (every caption word resembled by some token, no other word), the length
    loss (the tokens at a word embedding's norm), and the loss of the tokens its regions cover."""

    def __init__(
        self, model, tokenizer, captions: list[str], ids: list[str], regions: dict, config: WordAlignmentConfig, device
    ):
        """``regions``: record id -> its regions, for the images whose tokens are trained on them too."""
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        region_words = {str(w).lower() for rs in regions.values() for r in rs for w in r["words"]}
        self.candidates, self.targets = caption_targets(captions, tokenizer, config.max_word_share, region_words)
        self.token_targets = {  # image index -> (T, C)
            i: region_targets(regions[key], side, self.candidates, tokenizer)
            for i, key in enumerate(ids)
            if key in regions
        }
        embeddings = model.get_input_embeddings().weight.detach()
        self.words = F.normalize(embeddings[self.candidates].float(), dim=-1).to(device)
        # the <image> row (last, zero) left out
        self.word_norm = embeddings[: len(embeddings) - 1].norm(dim=-1).mean().to(device)
        self.scale = torch.nn.Parameter(torch.tensor(math.log(10.0), device=device))
        self.bias = torch.nn.Parameter(torch.tensor(-5.0, device=device))
        self.norm_weight, self.region_weight, self.device = config.norm_weight, config.region_weight, device

    def __call__(self, tokens: torch.Tensor, similarity: torch.Tensor, batch: torch.Tensor) -> dict:
        """The losses of ``batch``'s visual tokens (B, T, D) and their best cosine with each word (B, C), with what
        the progress line reports."""
        logits = self.scale.exp() * similarity + self.bias
        target = self.targets[batch].to(self.device)
        match = F.binary_cross_entropy_with_logits(logits, target)
        length = ((tokens.norm(dim=-1) / self.word_norm - 1) ** 2).mean()
        loss = match + self.norm_weight * length
        region_loss, region_recall = self._regions(tokens, batch)
        if region_loss is not None:
            loss = loss + self.region_weight * region_loss
        return {
            "loss": loss,
            "match": match,
            "length": length,
            "logits": logits,
            "target": target,
            "region_recall": region_recall,
        }

    def _regions(self, tokens: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor | None, float | None]:
        """The loss and recall of the tokens the regions of ``batch``'s images cover (None, None: no such token)."""
        rows = [r for r, i in enumerate(batch.tolist()) if i in self.token_targets]
        wanted = torch.stack([self.token_targets[int(batch[r])] for r in rows]).float() if rows else torch.zeros(0, 1)
        wanted = wanted.to(self.device)
        covered = wanted.sum(dim=-1) > 0  # a box may cover no patch
        if not covered.any():
            return None, None
        per_token = F.normalize(tokens[rows], dim=-1) @ self.words.T
        token_logits = (self.scale.exp() * per_token + self.bias)[covered]
        loss = F.binary_cross_entropy_with_logits(token_logits, wanted[covered])
        return loss, recall_at_own_k(token_logits.detach(), wanted[covered])


def _train_vision_side(model, objective: _WordObjective, low, high, config: WordAlignmentConfig, device, progress):
    """Train the towers, mining and projector of ``model`` (moved to ``device``; the LLM frozen where it is) and the
    objective's scale and bias on ``objective``."""
    from minigemini.synthetic.recipe.encoders import optimizer_step, warmup_cosine

    model.requires_grad_(False)
    vision = [
        m
        for m in (model.model.vision_tower, model.model.vision_tower_aux, model.model.mining, model.model.mm_projector)
        if m is not None
    ]
    for module in vision:
        module.requires_grad_(True)
        module.to(device)  # the LLM is only read, and stays where it is
    parameters = [p for m in vision for p in m.parameters()] + [objective.scale, objective.bias]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    steps_per_epoch = len(low) // config.batch_size or 1
    scheduler = warmup_cosine(optimizer, config.warmup_steps, steps_per_epoch * config.epochs)
    autocast = tower_autocast(config.precision, device)
    print(
        f"Word alignment: {len(low)} images, {len(objective.candidates)} word tokens, {config.epochs} epoch(s) x "
        f"{steps_per_epoch} steps of {config.batch_size}; {len(objective.token_targets)} with regions; "
        f"on {device.type}",
        flush=True,
    )
    model.train()
    started = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(len(low), generator=torch.Generator().manual_seed(config.seed + epoch))
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            with autocast:
                tokens, similarity = token_word_similarity(
                    model, low[batch].to(device), high[batch].to(device), objective.words
                )
            losses = objective(tokens, similarity, batch)
            optimizer_step(losses["loss"], parameters, optimizer, scheduler)
            if progress and (step % 10 == 0 or step == steps_per_epoch - 1):
                recall = recall_at_own_k(losses["logits"].detach(), losses["target"])
                regional = "" if losses["region_recall"] is None else f"  region recall {losses['region_recall']:.2f}"
                print(
                    f"  epoch {epoch + 1} step {step + 1}/{steps_per_epoch}  loss {losses['match'].item():.4f}  "
                    f"length {losses['length'].item():.3f}  word recall {recall:.2f}{regional}  "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )


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
