"""The chat step: the LLM's own answers to plain prompts, written as stage-2 records; and its prompt file."""

import json

import pytest

from minigemini.data.records import read_records
from minigemini.loading import load_pretrained
from minigemini.synthetic.chat_checks import CHAT_CHECKS
from minigemini.synthetic.recipe.chat_replay import ChatReplayConfig, read_prompts, write_chat_replay
from minigemini.synthetic.recipe.pipeline import CHAT_PROMPTS
from tests.helpers.serving import save_tiny_mgm, script_answers


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_mgm(tmp_path_factory.mktemp("mgm"))


def prompt_file(tmp_path, text: str) -> str:
    path = tmp_path / "prompts.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_prompts_skip_comments_and_blank_lines_and_bad_files_are_named(tmp_path):
    assert read_prompts(prompt_file(tmp_path, "# a comment\n\nHello?\n  Why is it dark at night?  \n")) == [
        "Hello?",
        "Why is it dark at night?",
    ]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_prompts(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompts(prompt_file(tmp_path, "# only a comment\n\n"))
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        ChatReplayConfig(prompts="x", repeats=0)


def test_answers_that_end_become_stage_two_records(model_dir, tmp_path, monkeypatch):
    _, processor = load_pretrained(model_dir)
    script_answers(monkeypatch, processor, "Paris is lovely.")  # the tiny model runs; its answer is forced
    prompts = prompt_file(tmp_path, "What is the capital of Italy?\nSay hello.\n")
    output = write_chat_replay(model_dir, tmp_path / "chat" / "replay.json", ChatReplayConfig(prompts, 16, repeats=2))
    records = json.loads(output.read_text())
    assert [r["conversations"] for r in records[::2]] == [
        [{"from": "human", "value": q}, {"from": "gpt", "value": "Paris is lovely."}]
        for q in ("What is the capital of Italy?", "Say hello.")
    ]
    assert len(records) == 4 and len({r["id"] for r in records}) == 4 and records[0]["source"] == "chat-replay"
    usable, skips = read_records([str(output)])
    assert len(usable) == 4 and skips.total == 0  # valid text-only training records

    before = output.stat().st_mtime_ns  # written once: a resumed recipe keeps the answers it trained on
    write_chat_replay(model_dir, output, ChatReplayConfig(prompts, 16))
    assert output.stat().st_mtime_ns == before


def test_answers_cut_off_by_the_token_budget_are_left_out(model_dir, tmp_path):
    prompts = prompt_file(tmp_path, "Tell me a long story.\n")
    # the random tiny model never ends within 3 tokens: nothing is kept, and nothing is written
    with pytest.raises(ValueError, match="no answer ended within 3 new tokens; raise max_new_tokens"):
        write_chat_replay(model_dir, tmp_path / "replay.json", ChatReplayConfig(prompts, max_new_tokens=3))
    assert not (tmp_path / "replay.json").exists()


def test_the_recipe_prompts_leave_out_the_ablation_chat_checks():
    prompts = {p.lower() for p in read_prompts(CHAT_PROMPTS)}
    assert len(prompts) >= 200
    assert not prompts & {question.lower() for question, _ in CHAT_CHECKS}
