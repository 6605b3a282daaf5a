#!/usr/bin/env bash
# Create .venv and install the project. torch==2.13.0 first: on the CPU machines here it is a local
# CPU wheel; any other torch spec would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${V4S_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[dev]"
