#!/usr/bin/env bash
# Build llama.cpp's llama-server (CPU) from the llama-cpp-python source distribution,
# which vendors the whole llama.cpp tree. The binary is cached; a second run is instant.
#   LLAMA_CPP_PYTHON_VERSION  sdist version (default 0.3.36, the one the fixtures came from)
#   LLMOBS_CACHE              cache folder (default .cache at the repository root)
#   LLAMA_EXTRA_CMAKE_ARGS    e.g. "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache=${LLMOBS_CACHE:-$root/.cache}
dest=$cache/llama.cpp-$version${LLAMA_BUILD_SUFFIX:-}
bin=$dest/build/bin/llama-server
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary=:all: -d "$work" "llama-cpp-python==$version" >&2
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
# shellcheck disable=SC2086
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_CURL=OFF ${LLAMA_EXTRA_CMAKE_ARGS:-} >&2
cmake --build "$src/build" --target llama-server -j "$(nproc)" >&2
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/build/bin" "$dest.tmp/models"
cp "$src/build/bin/llama-server" "$dest.tmp/build/bin/"
cp "$src"/models/ggml-vocab-*.gguf "$dest.tmp/models/"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "$bin"
