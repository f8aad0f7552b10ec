"""Keep the LLM's chat through instruction tuning: record its own answers to plain prompts, and train on them too.

Stage 2 tunes the LLM (LoRA) on image dialogues whose answers are a word or a number; with nothing else in the data
the default model learned to answer "How many legs does a spider have?" with "1" (research/README.md).  This step
asks the model *before* stage 2 -- whose LLM is still the pretrained one, behind the same chat template -- a list of
text-only prompts, and writes its greedy answers as LLaVA-format records that stage 2 mixes into its data
(self-distillation: the target is what the LLM already said, so it keeps its knowledge, right or wrong, and its
style).  Answers that use the whole token budget may be cut off mid-sentence and are left out, so stage 2 never
learns to stop early.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minigemini.data.jsonio import write_records

__all__ = ["ChatReplayConfig", "read_prompts", "write_chat_replay"]

SOURCE = "chat-replay"


@dataclass
class ChatReplayConfig:
    prompts: str  # a text file, one prompt per line, '#' comments (the recipe's default: chat_prompts.txt beside it)
    max_new_tokens: int = 64
    batch_size: int = 32
    repeats: int = 1  # each record written this many times: its weight against the image dialogues

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"chat replay: {name} must be >= 1, got {getattr(self, name)}")


def read_prompts(path: str | Path) -> list[str]:
    """The file's prompts: one per non-empty line, lines starting with '#' skipped; an error when there is none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chat replay: prompt file {path} not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"chat replay: {path} holds no prompt (one per line; '#' starts a comment line)")
    return prompts


def write_chat_replay(model_dir: str | Path, output: str | Path, config: ChatReplayConfig) -> Path:
    """Answer ``config.prompts`` with the model in ``model_dir`` and write the records to ``output`` (skipped when
    it exists); returns ``output``."""
    from minigemini.inference import batch_generate
    from minigemini.loading import load_pretrained

    output = Path(output)
    if output.is_file():
        print(f"Chat replay already written: {output}")
        return output
    prompts = read_prompts(config.prompts)
    model, processor = load_pretrained(model_dir, dtype="fp32")  # fp32: the LLM's answers as released
    answers = batch_generate(
        model,
        [(None, prompt) for prompt in prompts],
        processor,
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        progress=False,
    )
    kept = [(p, a.text) for p, a in zip(prompts, answers) if a.finish_reason == "stop" and a.text]
    if not kept:
        raise ValueError(
            f"chat replay: no answer ended within {config.max_new_tokens} new tokens; raise max_new_tokens"
        )
    records = [
        {
            "id": f"{SOURCE}-{index:04d}-{copy}",
            "source": SOURCE,
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}],
        }
        for index, (prompt, answer) in enumerate(kept)
        for copy in range(config.repeats)
    ]
    print(
        f"[chat replay] {len(kept)} of {len(prompts)} answers ended within {config.max_new_tokens} tokens (the "
        f"rest are left out), {len(records)} records -> {output}",
        flush=True,
    )
    return write_records(output, records)
