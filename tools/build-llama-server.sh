#!/usr/bin/env bash
# Build llama.cpp's llama-server (CPU) from the llama-cpp-python source distribution,
# which vendors the whole llama.cpp tree. The binary is cached; a second run is instant.
#   LLAMA_CPP_PYTHON_VERSION  sdist version (default 0.3.36, the one the fixtures came from)
#   LLMOBS_CACHE              cache folder (default .cache at the repository root)
#   LLAMA_EXTRA_CMAKE_ARGS    e.g. "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90"
#   LLAMA_BUILD_SUFFIX        appended to the cache folder's name, e.g. -cuda beside the CPU build
#   LLAMA_CPP_SOURCE          a llama.cpp source tree to build instead of downloading the sdist
#                             (for machines without network)
#   LLAMA_BUILD_LOG           a file for the download and compiler output (tens of thousands of
#                             warning lines); without it they go to stderr
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache=${LLMOBS_CACHE:-$root/.cache}
dest=$cache/llama.cpp-$version${LLAMA_BUILD_SUFFIX:-}
bin=$dest/build/bin/llama-server
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$cache"
if [ -n "${LLAMA_BUILD_LOG:-}" ]; then
  mkdir -p "$(dirname "$LLAMA_BUILD_LOG")"
  echo "building llama-server $version (the first time only: 16-27 minutes on 2 cores); output in $LLAMA_BUILD_LOG" >&2
  exec 3>"$LLAMA_BUILD_LOG"
else
  exec 3>&2
fi
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "${LLAMA_CPP_SOURCE:-}" ]; then
  src=$(cd "$LLAMA_CPP_SOURCE" && pwd)
else
  python3 -m pip download --quiet --no-deps --no-binary=:all: -d "$work" "llama-cpp-python==$version" >&3 2>&3
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
fi
# shellcheck disable=SC2086
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_CURL=OFF ${LLAMA_EXTRA_CMAKE_ARGS:-} >&3 2>&3
cmake --build "$work/build" --target llama-server -j "$(nproc)" >&3 2>&3
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/build/bin" "$dest.tmp/models"
cp "$work/build/bin/llama-server" "$dest.tmp/build/bin/"
cp "$src"/models/ggml-vocab-*.gguf "$dest.tmp/models/"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "$bin"
