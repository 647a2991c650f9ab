#!/usr/bin/env bash
# README quick start (b): install what a fresh Debian/Ubuntu machine lacks (Xvfb and Qt's
# xcb libraries, via apt; PyTorch's CPU build; the package with its test extra, in a fresh
# virtual environment .venv-test), then run the whole test suite headless (napari tests
# under Xvfb, started by pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

if ! command -v Xvfb >/dev/null && command -v apt-get >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
    libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-xfixes0 libxcb-cursor0 \
    libdbus-1-3 libegl1 libgl1 libfontconfig1 libglib2.0-0 >/dev/null
fi

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
