#!/usr/bin/env bash
# README quick start (b): a fresh virtual environment with PyTorch's CPU build, the package
# with its test extra, then the whole test suite headless (napari tests under Xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -m venv .venv-test
. .venv-test/bin/activate
python -m pip install -q --upgrade pip
# PyTorch first (TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the small CPU build,
# or a CUDA index for GPUs; see README), then the package with its test extra
python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
python -m pip install -q -e ".[testing]"
npe2 validate napari-attnrestore
python -m pytest -q "$@"
