"""A real llama.cpp `llama-server` on loopback, serving a tiny random-weight model.

Nothing can be downloaded here, so the model is written locally with the `gguf` package: a 2-layer
llama-architecture network (hidden 64, 4 heads, 2 KV heads) with random weights, borrowing the real
Qwen2 tokenizer from the vocab-only GGUF that tools/build-llama-server.sh copies next to the binary.
It is written once and cached under the cache folder. Its output is random text (it can contain odd
bytes and partial UTF-8), but the server's timing, batching, slots and /metrics are the real ones.

API::

    from tests.support.llama import llama_server

    def test_something(tmp_path):
        with llama_server(tmp_path, parallel=2, ctx_size=1024) as server:
            server.url      # "http://127.0.0.1:PORT" (OpenAI API, /health, /metrics, /slots, /props)
            server.model    # the model name it serves (alias), for the "model" field of requests
            server.port     # the port
            server.process  # the subprocess.Popen of llama-server (its pid roots the process tree)

`llama_server(tmp_path, parallel=N, ctx_size=C, threads=T, extra_args=[...])` starts
`llama-server -m MODEL --metrics --host 127.0.0.1 --port P -np N -c C -t T` and returns once /health
answers 200. The server log is tmp_path / "llama-server.log" (its tail is shown if start-up fails).
`llama_binary()` and `tiny_model()` return the two paths on their own; `shape=QWEN3_4B` (and
`random_model(QWEN3_4B)`) gives a random model with Qwen3-4B's dimensions instead, for a real GPU.
When the binary or the vocab file is missing, tests.support.real.missing() is called: skip locally,
fail under CI=true.

Paths: the cache folder is $LLMOBS_CACHE or <repo>/.cache; the build is
<cache>/llama.cpp-$LLAMA_CPP_PYTHON_VERSION (default 0.3.36)$LLAMA_BUILD_SUFFIX/build/bin/llama-server and
the vocab files are in <cache>/llama.cpp-<version><suffix>/models/ggml-vocab-*.gguf, as the build script
writes them.

Clients of this server should not reuse keep-alive connections across streamed requests (it may
close them) and must tolerate undecodable bytes in the streamed text.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from tests.support.procs import free_port, running
from tests.support.real import missing

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_ALIAS = "tiny-random-llama"
VOCAB = "qwen2"


@dataclass(frozen=True)
class ModelShape:
    """A llama-architecture network's shape; part of the cached file's name, so a change writes a new file."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context: int


TINY = ModelShape("tiny", hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, context=4096)
# Qwen3-4B's dimensions (DESIGN.md), for load that means something on a real GPU: about 8 GB in f16.
QWEN3_4B = ModelShape("qwen3-4b-shape", hidden=2560, layers=36, heads=32, kv_heads=8, ffn=9728, context=40960)
BUILD_HINT = "run tools/build-llama-server.sh (16-27 minutes on 2 cores the first time)"


@dataclass(frozen=True)
class LlamaServer:
    url: str
    model: str
    port: int
    process: Popen


def cache_dir() -> Path:
    return Path(os.environ.get("LLMOBS_CACHE") or REPO_ROOT / ".cache")


def build_dir() -> Path:
    """Where tools/build-llama-server.sh put its build (same variables, e.g. LLAMA_BUILD_SUFFIX=-cuda)."""
    version = os.environ.get("LLAMA_CPP_PYTHON_VERSION", "0.3.36")
    return cache_dir() / f"llama.cpp-{version}{os.environ.get('LLAMA_BUILD_SUFFIX', '')}"


def llama_binary() -> Path:
    binary = build_dir() / "build" / "bin" / "llama-server"
    if not os.access(binary, os.X_OK):
        missing(f"llama-server at {binary}", BUILD_HINT)
    return binary


def tiny_model() -> Path:
    return random_model(TINY)


def random_model(shape: ModelShape) -> Path:
    """The random-weight GGUF, written on first use (atomically, so parallel test processes are safe)."""
    vocab = build_dir() / "models" / f"ggml-vocab-{VOCAB}.gguf"
    if not vocab.is_file():
        missing(f"vocab file {vocab}", BUILD_HINT)
    s = shape
    target = cache_dir() / "models" / f"{s.name}-llama-{VOCAB}-h{s.hidden}-l{s.layers}-kv{s.kv_heads}.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        _write_random_model(vocab, partial, shape)
        partial.replace(target)
    return target


def _write_random_model(vocab_path: Path, out: Path, shape: ModelShape) -> None:
    import gguf
    import numpy as np

    vocab = gguf.GGUFReader(vocab_path)
    n_vocab = len(vocab.fields["tokenizer.ggml.tokens"].data)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(MODEL_ALIAS)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _copy_tokenizer(vocab, writer)

    rng = np.random.default_rng(0)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    hidden, ffn, kv_dim = shape.hidden, shape.ffn, shape.kv_heads * (shape.hidden // shape.heads)
    writer.add_tensor("token_embd.weight", weight(n_vocab, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(shape.layers):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"{block}.attn_q.weight", weight(hidden, hidden))
        writer.add_tensor(f"{block}.attn_k.weight", weight(kv_dim, hidden))
        writer.add_tensor(f"{block}.attn_v.weight", weight(kv_dim, hidden))
        writer.add_tensor(f"{block}.attn_output.weight", weight(hidden, hidden))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(hidden, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _copy_tokenizer(vocab, writer) -> None:
    """Copy every tokenizer.* key-value field of the vocab-only GGUF, with its original types."""
    import gguf

    for key, field in vocab.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value_type = field.types[0]
        if value_type == gguf.GGUFValueType.ARRAY:
            element_type = field.types[1]
            values = [_field_item(field, index, element_type) for index in field.data]
            writer.add_key_value(key, values, value_type, sub_type=element_type)
        else:
            writer.add_key_value(key, _field_item(field, field.data[0], value_type), value_type)


def _field_item(field, index: int, value_type):
    import gguf

    part = field.parts[index]
    if value_type == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="surrogateescape")
    return part.tolist()[0]


@contextlib.contextmanager
def llama_server(
    tmp_path: Path,
    parallel: int = 2,
    ctx_size: int = 1024,
    threads: int = 2,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
    shape: ModelShape = TINY,
) -> Iterator[LlamaServer]:
    binary = llama_binary()
    model = random_model(shape)
    port = free_port()
    argv = [
        str(binary),
        *("-m", str(model), "--alias", MODEL_ALIAS, "--metrics"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("-np", str(parallel), "-c", str(ctx_size), "-t", str(threads)),
        *extra_args,
    ]
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "llama-server.log"
    # running() waits for an answer below 500; llama-server answers 503 until the model is loaded.
    with running(argv, f"{url}/health", log_path, timeout=timeout) as process:
        yield LlamaServer(url=url, model=MODEL_ALIAS, port=port, process=process)
