#!/usr/bin/env bash
# Build llama.cpp's native tools (llama-bench, llama-speculative-simple, llama-quantize) from the very
# llama.cpp that the installed llama-cpp-python vendors, so native and Python figures compare fairly
# and quantized files suit the bound library (scripts/make_random_model.py --quantize).
#
#   scripts/build_llama_tools.sh [OUT_DIR]
#
# OUT_DIR         default: $LLAMA_TOOLS_DIR, else $HOME/.cache/edgespec/llama-tools
# LLAMA_SDIST_DIR an unpacked llama-cpp-python sdist to build from (skips the download)
# LLAMA_CPP_PYTHON_VERSION  version to download (default: the installed one, else 0.3.36)
# PYTHON          interpreter for pip (default: the repo's .venv if present, else python3)
# JOBS            parallel compile jobs (default: 2)
# LLAMA_TOOLS_TARGETS  the tools to build, space-separated (default: all three)
# LLAMA_TOOLS_CFLAGS  C/C++ flags (default: -U__AMX_INT8__, as scripts/build_llama_cpp_wheel.sh: the AMX
#                 kernels that -march=native enables on Sapphire Rapids segfault on the first batched
#                 matmul inside these VMs; dropping them keeps the tools comparable with the wheel)
#
# Idempotent: builds only the tools missing from OUT_DIR, nothing when all are there. Builds CPU-only,
# static (-DBUILD_SHARED_LIBS=OFF), with ggml's default -march=native like a source install of the package.
# A change of flags does not trigger a rebuild: delete the binaries.
set -euo pipefail

OUT_DIR="${1:-${LLAMA_TOOLS_DIR:-$HOME/.cache/edgespec/llama-tools}}"
read -r -a TARGETS <<<"${LLAMA_TOOLS_TARGETS:-llama-bench llama-speculative-simple llama-quantize}"
JOBS="${JOBS:-2}"
CFLAGS_TOOLS="${LLAMA_TOOLS_CFLAGS--U__AMX_INT8__}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python3; fi
fi

log() { echo "[build_llama_tools] $*" >&2; }
die() { log "error: $*"; exit 1; }

MISSING=()
for t in "${TARGETS[@]}"; do
    [[ -x "$OUT_DIR/$t" ]] || MISSING+=("$t")
done
if [[ ${#MISSING[@]} -eq 0 ]]; then
    log "already built: ${TARGETS[*]} in $OUT_DIR (delete them to rebuild)"
    exit 0
fi
TARGETS=("${MISSING[@]}")

command -v cmake >/dev/null || die "cmake not found"
command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null || die "no C++ compiler found"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/edgespec-llama-tools.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [[ -n "${LLAMA_SDIST_DIR:-}" ]]; then
    SDIST="$LLAMA_SDIST_DIR"
    log "using the unpacked sdist at $SDIST"
else
    VERSION="${LLAMA_CPP_PYTHON_VERSION:-$("$PYTHON" -c \
        'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null || echo 0.3.36)}"
    log "downloading the llama-cpp-python==$VERSION sdist"
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps -d "$WORK/dl" "llama-cpp-python==$VERSION"
    ARCHIVE="$(ls "$WORK"/dl/llama_cpp_python-*.tar.gz "$WORK"/dl/llama-cpp-python-*.tar.gz 2>/dev/null | head -n1 || true)"
    [[ -n "$ARCHIVE" ]] || die "pip download produced no sdist in $WORK/dl"
    tar -xzf "$ARCHIVE" -C "$WORK"
    SDIST="$(find "$WORK" -maxdepth 1 -type d -name 'llama*cpp*python-*' | head -n1)"
fi
SRC="$SDIST/vendor/llama.cpp"
[[ -f "$SRC/CMakeLists.txt" ]] || die "no llama.cpp source at $SRC"

# Current llama.cpp has no curl dependency (LLAMA_CURL is deprecated and ignored); downloads go
# through cpp-httplib, whose HTTPS needs OpenSSL, so LLAMA_OPENSSL=OFF keeps the build dependency-free.
log "configuring $SRC (C/C++ flags: '${CFLAGS_TOOLS}')"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$CFLAGS_TOOLS" -DCMAKE_CXX_FLAGS="$CFLAGS_TOOLS" \
    -DBUILD_SHARED_LIBS=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_COMMON=ON >"$WORK/configure.log" \
    || { tail -n 40 "$WORK/configure.log" >&2; die "cmake configure failed"; }

log "building ${TARGETS[*]} with $JOBS jobs (several minutes on a small machine)"
cmake --build "$WORK/build" --config Release -j "$JOBS" --target "${TARGETS[@]}" >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; die "build failed"; }

mkdir -p "$OUT_DIR"
for t in "${TARGETS[@]}"; do
    [[ -x "$WORK/build/bin/$t" ]] || die "expected binary $WORK/build/bin/$t is missing"
    install -m 0755 "$WORK/build/bin/$t" "$OUT_DIR/$t"
done
log "installed into $OUT_DIR:"
for t in "${TARGETS[@]}"; do log "    $OUT_DIR/$t"; done
