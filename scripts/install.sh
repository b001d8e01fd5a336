#!/usr/bin/env bash
# Create .venv and install edgespec into it, with llama-cpp-python built for this machine.
#   scripts/install.sh          # the package and its server extra
#   scripts/install.sh --dev    # plus the test and lint tools
# GPU builds: LLAMA_CMAKE_ARGS="-DGGML_CUDA=on" or "-DGGML_METAL=on" (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="server"
[ "${1:-}" = "--dev" ] && extras="server,plot,dev"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
wheel=$(PYTHON=.venv/bin/python scripts/build_llama_cpp_wheel.sh)
.venv/bin/python -m pip install -q "$wheel" -e ".[$extras]"
echo "installed: $(.venv/bin/edgespec --version)" >&2
