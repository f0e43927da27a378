"""A real Hugging Face `transformers serve --continuous-batching` on loopback, on CPU, serving the tiny Qwen3
with random weights on disk (tests.support.tiny_qwen3.with_weights), from the engine environment
tools/build-engine-envs.sh caches (the same one as vLLM's).

What it is like (transformers 5.19.0, seen here): no /metrics (404); /v1/models answers 500 without a
Hugging Face cache directory; a request body with a field it does not know (`ignore_eos`) gets 422; the
model is pinned, so requests may name it or leave `model` out. Its continuous batching sizes the KV cache
from free memory unless told (21 GB on this machine once), so the cache is capped here with
`--cb-num-blocks` x `--cb-block-size`. Ready in about 15 s on an idle machine, 70 s on a busy one.

    with transformers_server(tmp_path) as server:
        server.url, server.port, server.process, server.model_dir
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from tests.support.procs import free_port, running
from tests.support.tiny_qwen3 import with_weights
from tests.support.vllm import ENV, engine_python

CB_BLOCKS = 64
CB_BLOCK_SIZE = 32  # 2,048 tokens of KV cache


@dataclass(frozen=True)
class TransformersServer:
    url: str
    port: int
    process: Popen
    model_dir: Path


@contextlib.contextmanager
def transformers_server(tmp_path: Path, timeout: float = 300.0) -> Iterator[TransformersServer]:
    python = engine_python()
    model = with_weights(python)
    port = free_port()
    argv = [
        str(python.parent / "transformers"),
        *("serve", "--continuous-batching", "--device", "cpu"),
        *("--cb-num-blocks", str(CB_BLOCKS), "--cb-block-size", str(CB_BLOCK_SIZE)),
        *("--host", "127.0.0.1", "--port", str(port), str(model)),
    ]
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "transformers-serve.log"
    with running(argv, f"{url}/health", log_path, timeout, ENV, own_session=True) as process:
        yield TransformersServer(url=url, port=port, process=process, model_dir=model)
