#!/usr/bin/env bash
# Build llama-cpp-python once into a wheel cache and print the wheel's path.
#
# Why not a plain `pip install llama-cpp-python`: its native build compiles llama.cpp's AMX kernels
# on CPUs that report AMX (Sapphire Rapids Xeons), and inside some VMs (these machines among them)
# the first AMX matrix multiply crashes the process. Undefining __AMX_INT8__ keeps every other
# native CPU feature and drops only that backend. pip's own wheel cache ignores CMAKE_ARGS, so the
# wheel is cached here under a name that includes the flags.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
flags="-U__AMX_INT8__"
extra="${LLAMA_CMAKE_ARGS:-}"   # e.g. -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90, or -DGGML_METAL=on
key=$(printf '%s|%s|%s|%s' "$version" "$flags" "$extra" "$(uname -m)" | sha256sum | cut -c1-16)
dir="${EDGESPEC_WHEEL_DIR:-$HOME/.cache/edgespec/wheels}/$key"
python="${PYTHON:-python3}"
if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $version (llama.cpp compiles: about 5 minutes on 2 cores)" >&2
  mkdir -p "$dir"
  CMAKE_ARGS="-DCMAKE_C_FLAGS=$flags -DCMAKE_CXX_FLAGS=$flags $extra" \
    "$python" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$dir" "llama-cpp-python==$version" >&2
fi
ls "$dir"/llama_cpp_python-*.whl | head -n 1
