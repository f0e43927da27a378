"""`llmobs-loadgen capacity`: how much VRAM a model needs and how many tokens and sequences its KV cache
holds on a GPU, beside what a live engine reports and what a sweep measured. README.md ("Capacity
planning") shows examples; plan.py says how each figure is computed."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from loadgen.capacity import live
from loadgen.capacity.errors import CapacityError
from loadgen.capacity.gpu import parse_size, read_nvml
from loadgen.capacity.loader import load
from loadgen.capacity.model import FULL, GIB, KIB, MIB, SLIDING, size
from loadgen.capacity.plan import EngineSettings, Gpu, Plan, make_plan
from loadgen.capacity.sweep import beside_sweep

EXAMPLES = """examples:
  llmobs-loadgen capacity --model ./Qwen3-4B --gpu-memory 24GiB
  llmobs-loadgen capacity --model ./Qwen3-4B --max-model-len 10000 --tokens 10000 --engine-url http://127.0.0.1:8000
  llmobs-loadgen capacity --model config.json --gpu-memory 79.18GiB --kv-cache-dtype fp8 --report sweep.json
  llmobs-loadgen capacity --model model.gguf --gpu-memory 24GiB --exporter-url http://127.0.0.1:9840
"""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "capacity",
        help="VRAM plan: weights, KV bytes per token, KV capacity, concurrent sequences",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="model directory (config.json, safetensors index), a config.json, or a .gguf",
    )
    model.add_argument(
        "--dtype", default="auto", help="weights dtype: auto (the checkpoint's), bfloat16, float16"
    )
    engine = p.add_argument_group("engine settings (vLLM's names and defaults)")
    engine.add_argument("--max-model-len", type=int, metavar="N", help="context length (the model's)")
    engine.add_argument("--gpu-memory-utilization", type=float, metavar="F", help="share of GPU memory (0.9)")
    engine.add_argument("--block-size", type=int, metavar="N", help="tokens per KV block (16)")
    engine.add_argument(
        "--kv-cache-dtype",
        metavar="DTYPE",
        help="auto (the model's), fp8, bfloat16, ...; llama.cpp: f16, q8_0, q4_0",
    )
    engine.add_argument(
        "--tensor-parallel-size", type=int, default=1, metavar="N", help="GPUs per replica (1)"
    )
    engine.add_argument("--max-num-seqs", type=int, metavar="N", help="(1024 on >= 70 GiB GPUs, else 256)")
    engine.add_argument("--max-num-batched-tokens", type=int, metavar="N", help="(8192 / 2048 likewise)")
    engine.add_argument(
        "--kv-cache-memory",
        metavar="SIZE",
        help="KV cache size given directly (vLLM --kv-cache-memory, VLLM_CPU_KVCACHE_SPACE)",
    )
    engine.add_argument("--activation-reserve", metavar="SIZE", help="instead of the activation estimate")
    engine.add_argument("--non-torch-reserve", metavar="SIZE", help="memory outside PyTorch (0.15GiB)")
    engine.add_argument(
        "--cuda-graph-reserve", metavar="SIZE", help="CUDA graphs, where vLLM subtracts them (0)"
    )
    gpu = p.add_argument_group("GPU")
    gpu.add_argument(
        "--gpu-memory",
        metavar="SIZE",
        help="e.g. 24GiB, 79.18GiB for an H100 80GB (default: NVML's GPU --gpu-index)",
    )
    gpu.add_argument("--gpu-index", type=int, default=0, metavar="N", help="the GPU NVML reads (0)")
    compare = p.add_argument_group("compare")
    compare.add_argument("--engine-url", metavar="URL", help="a running vLLM, SGLang or llama.cpp server")
    compare.add_argument(
        "--exporter-url", metavar="URL", help="llmobs-exporter: llm_kv_cache_capacity_tokens"
    )
    compare.add_argument("--prometheus-url", metavar="URL", help="Prometheus: llm_kv_cache_capacity_tokens")
    compare.add_argument("--target", help="the exporter target to read (when it has several)")
    compare.add_argument(
        "--report", metavar="FILE", help="a sweep's report JSON (llmobs-loadgen run --sweep)"
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--tokens", metavar="N[,N...]", help="also show KV bytes and sequences for these lengths"
    )
    out.add_argument("--output-json", metavar="FILE", help="write every figure as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """The command: print the plan (and comparisons); 2 on a configuration error."""
    spec = load(args.model, args.dtype)
    engine = _engine_report(args)
    settings = _settings(args, engine)
    gpu = _gpu(args, settings)
    plan = make_plan(spec, settings, gpu)
    comparison = live.explain(plan, engine) if engine is not None else []
    measured = beside_sweep(plan, args.report) if args.report else []
    lengths = _lengths(args.tokens, plan)
    print(render(plan, lengths, comparison, measured))
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(as_json(plan, lengths, engine, comparison, measured), handle, indent=2)
            handle.write("\n")
    return 0


def _engine_report(args: argparse.Namespace) -> live.EngineReport | None:
    if args.engine_url:
        return live.read_engine(args.engine_url)
    if args.exporter_url:
        return live.read_exporter(args.exporter_url, args.target)
    if args.prometheus_url:
        return live.read_prometheus(args.prometheus_url, args.target)
    return None


def _settings(args: argparse.Namespace, engine: live.EngineReport | None) -> EngineSettings:
    """Flags first, then what the engine reported about itself, then vLLM's defaults."""
    reported = engine or live.EngineReport("", "", None)
    cache_dtype = reported.cache_dtype if reported.cache_dtype not in (None, "None") else None
    size = {
        name: parse_size(getattr(args, name), f"--{name.replace('_', '-')}")
        for name in ("kv_cache_memory", "activation_reserve", "non_torch_reserve", "cuda_graph_reserve")
        if getattr(args, name)
    }
    if size.get("kv_cache_memory") is None and reported.kv_cache_memory:
        size["kv_cache_memory"] = reported.kv_cache_memory
    return EngineSettings(
        max_model_len=args.max_model_len or reported.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization or reported.gpu_memory_utilization or 0.9,
        block_size=args.block_size or reported.block_size or 16,
        kv_cache_dtype=args.kv_cache_dtype or cache_dtype or "auto",
        tensor_parallel=args.tensor_parallel_size,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        cuda_graph_reserve=size.pop("cuda_graph_reserve", 0),
        **size,
    )


def _gpu(args: argparse.Namespace, settings: EngineSettings) -> Gpu | None:
    if args.gpu_memory:
        memory = parse_size(args.gpu_memory, "--gpu-memory")
        return Gpu(memory, _given(args.gpu_memory, memory))
    if settings.kv_cache_memory is not None:
        return None
    return read_nvml(args.gpu_index)


def _given(text: str, memory: int) -> str:
    """ "given", and for a size in decimal units the reminder that GPUs sold as N GB have N GiB: an
    "80GB" H100 has 80 GiB (79.18 of them for vLLM), and --gpu-memory 80GB plans for 74.5."""
    decimal = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt])b\s*", text, re.IGNORECASE)
    if decimal is None:
        return "given"
    number, prefix = decimal.group(1), decimal.group(2).upper()
    sold = f"a GPU sold as {number}{prefix}B has {number} {prefix}iB"
    return f"given in decimal units; {sold}: --gpu-memory {number}{prefix}iB"


def _lengths(text: str | None, plan: Plan) -> list[int]:
    lengths = []
    for item in (text or "").split(","):
        if item.strip():
            try:
                value = int(item.replace("_", ""))
            except ValueError:
                raise CapacityError(f"--tokens {text}: whole numbers, e.g. 10000,40960") from None
            if value < 1:
                raise CapacityError(f"--tokens {value}: at least 1")
            lengths.append(value)
    if plan.max_model_len not in lengths:
        lengths.append(plan.max_model_len)
    return lengths


# -- rendering ------------------------------------------------------------------------------------


def render(plan: Plan, lengths: list[int], comparison: list[str], measured: list[str]) -> str:
    s, settings = plan.spec, plan.settings
    rows = [("Model", f"{s.architecture} ({s.source}), {s.dtype}"), ("Shape", _shape(plan))]
    params = "" if s.gguf_tensors else f" ({s.parameters():,} parameters)"
    rows.append(("Weights", f"{size(plan.weights_checkpoint)} in the checkpoint{params}"))
    if plan.weights_loaded != plan.weights_checkpoint:
        # four decimals, as vLLM's "Model loading took X GiB" line, so the two can be read side by side
        rows.append(("", f"{plan.weights_loaded / GIB:.4f} GiB as vLLM loads them ({plan.loaded_detail})"))
    rows.append(("KV per token", f"{_kib(plan.kv_bytes_per_token)} ({_kv_formula(plan)})"))
    rows += [("", _per_length(plan, n)) for n in lengths]
    if plan.budget is not None and plan.gpu is not None:
        rows.append(
            (
                "GPU",
                f"{size(plan.gpu.memory)} ({plan.gpu.source}) x {settings.gpu_memory_utilization:g} "
                f"gpu_memory_utilization = {size(plan.budget)} budget",
            )
        )
        reserve = (
            f"activation {size(plan.activation)} ({plan.activation_detail}), non-torch {size(plan.non_torch)}"
        )
        if settings.cuda_graph_reserve:
            reserve += f", CUDA graphs {size(settings.cuda_graph_reserve)}"
        rows.append(("Reserved", reserve))
    rows.append(
        (
            "KV cache",
            f"{size(plan.kv_memory)} ({plan.kv_memory_detail}) = {plan.blocks:,} blocks of "
            f"{settings.block_size} = {plan.capacity_tokens:,} tokens ({plan.tokens_persize():,.0f} per GiB)",
        )
    )
    rows.append(
        (
            "Concurrency",
            f"{plan.sequences:,.2f} sequences of {plan.max_model_len:,} tokens (max_model_len) at once",
        )
    )
    out = ["== Capacity plan (vLLM's memory arithmetic; see `llmobs-loadgen capacity --help`)"]
    out += [f"{label:<14}{value}" for label, value in rows]
    out += [f"Note: {note}." for note in plan.notes]
    if comparison:
        out.append("== Engine")
        out += comparison
    if measured:
        out.append("== Measured (sweep report)")
        out += measured
    return "\n".join(out)


def _shape(plan: Plan) -> str:
    s = plan.spec
    kinds = f"{s.kv_layers(FULL)} full attention"
    if s.kv_layers(SLIDING):
        kinds += f", {s.kv_layers(SLIDING)} sliding window {s.sliding_window}"
    other = s.layers - s.kv_layers(FULL) - s.kv_layers(SLIDING)
    if other:
        kinds += f", {other} without per-token KV"
    attention = (
        f"MLA latent {s.mla[0]} + rope {s.mla[1]}"
        if s.mla
        else f"{s.heads} heads, {s.kv_heads} KV heads x head_dim {s.head_dim}"
    )
    moe = f", {s.experts} experts ({s.experts_per_token} per token)" if s.experts else ""
    return f"{s.layers} layers ({kinds}), {attention}, hidden {s.hidden:,}, vocab {s.vocab:,}{moe}"


def _kv_formula(plan: Plan) -> str:
    s = plan.spec
    layers = s.kv_layers(FULL) + s.kv_layers(SLIDING)
    element = plan.kv_bytes_per_token / (
        layers * (sum(s.mla) if s.mla else 2 * s.kv_heads_per_gpu(plan.settings.tensor_parallel) * s.head_dim)
    )
    if s.mla:
        return f"{plan.kv_dtype}: {layers} layers x ({s.mla[0]} + {s.mla[1]}) x {element:g} bytes"
    heads = s.kv_heads_per_gpu(plan.settings.tensor_parallel)
    return f"{plan.kv_dtype}: 2 x {layers} layers x {heads} KV heads x {s.head_dim} x {element:g} bytes"


def _per_length(plan: Plan, tokens: int) -> str:
    label = " (max_model_len)" if tokens == plan.max_model_len else ""
    if not plan.spec.kv_layers(SLIDING):
        fits = plan.capacity_tokens / tokens
        return f"{size(plan.kv_bytes(tokens))} for {tokens:,} tokens{label}; {fits:,.2f} such sequences fit"
    held = plan.sequence_bytes(tokens)  # sliding-window layers hold their window, not the sequence
    fits = plan.blocks * plan.block_bytes / held
    label = " (max_model_len; sliding-window layers" if label else " (sliding-window layers"
    return f"{size(held)} for {tokens:,} tokens{label} hold their window); {fits:,.2f} such sequences fit"


def as_json(
    plan: Plan,
    lengths: list[int],
    engine: live.EngineReport | None,
    comparison: list[str],
    measured: list[str],
) -> dict:
    s = plan.spec
    return {
        "model": {
            "architecture": s.architecture,
            "source": s.source,
            "dtype": s.dtype,
            "layers": s.layers,
            "kv_layers": s.kv_layers(FULL) + s.kv_layers(SLIDING),
            "kv_heads": s.kv_heads,
            "head_dim": s.head_dim,
            "mla": list(s.mla) if s.mla else None,
            "parameters": None if s.gguf_tensors else s.parameters(),
        },
        "settings": {
            **vars(plan.settings),
            "kv_cache_dtype": plan.kv_dtype,
            "max_model_len": plan.max_model_len,
        },
        "gpu": None if plan.gpu is None else {"memory_bytes": plan.gpu.memory, "source": plan.gpu.source},
        "weights_bytes": {"checkpoint": plan.weights_checkpoint, "as_loaded": plan.weights_loaded},
        "kv_bytes_per_token": plan.kv_bytes_per_token,
        "kv_bytes_for": {str(n): plan.sequence_bytes(n) for n in lengths},
        "budget_bytes": plan.budget,
        "reserve_bytes": {
            "activation": plan.activation,
            "activation_source": plan.activation_detail,
            "non_torch": plan.non_torch,
            "cuda_graphs": plan.settings.cuda_graph_reserve,
        },
        "kv_cache_bytes": plan.kv_memory,
        "blocks": plan.blocks,
        "capacity_tokens": plan.capacity_tokens,
        "concurrent_sequences": plan.sequences,
        "notes": list(plan.notes),
        "engine": None if engine is None else {**vars(engine), "explanation": comparison},
        "measured": measured,
    }


def _kib(nbytes: float) -> str:
    return f"{nbytes / KIB:g} KiB" if nbytes < MIB else f"{nbytes / MIB:.2f} MiB"


__all__ = ["add_parser", "as_json", "render", "run"]
