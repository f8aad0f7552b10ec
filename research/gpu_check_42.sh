#!/usr/bin/env bash
# Issue 42's GPU check (one NVIDIA GPU, no network): the CUDA tests, including one process under FSDP, ZeRO-2 and
# ZeRO-3 on the GPU against a plain run (accelerate's and DeepSpeed's CUDA paths, not the CPU shims).
# Needs the project's environment with a CUDA torch; deepspeed is used when importable (else its cases skip, saying so).
#   bash research/gpu_check_42.sh            # about 3 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name(0))"
"$PY" -c "import deepspeed; print('deepspeed', deepspeed.__version__)" || echo "deepspeed not installed: ZeRO cases skip"
timeout 540 "$PY" -m pytest tests/test_cuda.py -q -rs -x -p no:cacheprovider
