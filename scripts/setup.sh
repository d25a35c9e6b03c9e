#!/usr/bin/env bash
# Creates .venv with the CPU torch build, a portable llama.cpp and the project.
#
# llama-cpp-python compiles llama.cpp at install. By default that build uses the build
# machine's native flags (-march=native), and on cloud CPUs that advertise AMX or AVX-512
# without letting a process run them (Sapphire Rapids VMs) every forward pass then dies of
# SIGILL. So llama.cpp is built for a fixed floor: x86-64 with AVX2/FMA/F16C, nothing above.
# pip caches a wheel it built whatever CMAKE_ARGS said, so the build never reads or writes
# pip's cache; a marker in the venv records the build, and a venv holding another build is
# rebuilt.
#
# Usage: scripts/setup.sh [extra]   e.g. scripts/setup.sh test  ->  pip install -e '.[test]'
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_VERSION="0.3.36"
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
MARKER=".venv/llama-cpp-build.txt"
WANT="llama-cpp-python==${LLAMA_CPP_VERSION} CMAKE_ARGS=${PORTABLE_CMAKE_ARGS}"

[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first, pinned, so pip keeps the CPU build that lies on these machines.
.venv/bin/pip install --quiet torch==2.13.0
if [ "$(cat "$MARKER" 2>/dev/null)" != "$WANT" ]; then
    echo "building llama.cpp (llama-cpp-python ${LLAMA_CPP_VERSION}) for x86-64 + AVX2, not this machine's native flags: about 6-10 minutes on 2 cores"
    # Every core compiles (CMake builds serially unless told).
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" FORCE_CMAKE=1 .venv/bin/pip install --no-cache-dir --force-reinstall \
        --no-deps "llama-cpp-python==${LLAMA_CPP_VERSION}"
    echo "$WANT" > "$MARKER"
fi
EXTRA="${1:-}"
.venv/bin/pip install --quiet -e ".${EXTRA:+[$EXTRA]}"
