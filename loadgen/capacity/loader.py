"""One entry for every model source: a Hugging Face model directory or config.json, or a GGUF file."""

from __future__ import annotations

from pathlib import Path

from loadgen.capacity.gguf_model import load_gguf
from loadgen.capacity.hf_model import load_config
from loadgen.capacity.model import ModelSpec


def load(path: str | Path, dtype: str = "auto") -> ModelSpec:
    path = Path(path)
    return load_gguf(path) if path.suffix == ".gguf" else load_config(path, dtype)
