#!/usr/bin/env bash
# Creates .venv and installs the pinned project. torch goes first so pip takes the CPU build
# rather than resolving a multi-GB CUDA build for a dependent package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
