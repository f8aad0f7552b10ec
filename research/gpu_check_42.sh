#!/usr/bin/env bash
# Issue 42's GPU check (one NVIDIA GPU, no network): the CUDA tests, including one process under FSDP, ZeRO-2 and
# ZeRO-3 on the GPU against a plain run (accelerate's and DeepSpeed's CUDA paths, not the CPU shims).
# Needs the project's environment with a CUDA torch; deepspeed is used when importable (else its cases skip, saying so).
#   bash research/gpu_check_42.sh            # about 3 minutes
# The H200 image has torch, transformers, accelerate and peft but no deepspeed (a source-only package) nor pydantic:
# build wheels here and carry them (.whl, excluded from git), then `pip install --no-index --no-deps --target ...`:
#   pip wheel --no-deps -w .whl deepspeed==0.19.8 hjson
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#       pydantic pydantic-core annotated-types typing-inspection
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name(0))"
"$PY" -c "import deepspeed; print('deepspeed', deepspeed.__version__)" || echo "deepspeed not installed: ZeRO cases skip"
timeout 540 "$PY" -m pytest tests/test_cuda.py -q -rs -x -p no:cacheprovider
