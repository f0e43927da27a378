"""What a running engine says its KV cache holds, and why that differs from the plan.

Sources, each read once with a 10 s timeout and a 16 MiB cap on the answer:
- an engine's own endpoints: vLLM's `/metrics` (`vllm:cache_config_info`: num_gpu_blocks, block_size,
  kv_cache_size_tokens, gpu_memory_utilization, cache_dtype) and `/v1/models` (max_model_len); SGLang's
  `sglang:max_total_num_tokens`; llama.cpp's `/props` (n_ctx per slot, total_slots);
- the exporter's `/metrics` or Prometheus: `llm_kv_cache_capacity_tokens` (docs/metrics.md), for any
  engine the exporter normalizes.
Credentials in a URL never reach a message (redacted as everywhere in the load generator).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadgen.capacity.errors import CapacityError
from loadgen.capacity.model import GIB, size
from loadgen.capacity.plan import Plan
from loadgen.redact import redact_url

MAX_ANSWER_BYTES = 16 * 1024 * 1024
TIMEOUT_S = 10.0
CAPACITY_FAMILY = "llm_kv_cache_capacity_tokens"
INFO_FAMILY = "llm_target_info"  # {target, engine_kind}


@dataclass(frozen=True)
class EngineReport:
    """What one source says about the engine's KV cache."""

    source: str  # where it was read, in words (URL redacted)
    kind: str  # vllm, sglang, llamacpp, exporter, prometheus
    engine_kind: str | None
    capacity_tokens: int | None = None
    detail: str = ""
    blocks: int | None = None
    block_size: int | None = None
    gpu_memory_utilization: float | None = None
    cache_dtype: str | None = None
    max_model_len: int | None = None
    blocks_override: int | None = None
    kv_cache_memory: int | None = None


def _get(url: str, params: dict | None = None) -> httpx.Response:
    """One GET, answer capped at MAX_ANSWER_BYTES; errors say what failed, without credentials."""
    try:
        with httpx.Client(timeout=TIMEOUT_S) as client, client.stream("GET", url, params=params) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise CapacityError(f"{redact_url(url)}: answer larger than {MAX_ANSWER_BYTES} bytes")
            # the body is decoded already: keep only its type, or httpx would decode it again
            kept = {"content-type": response.headers.get("content-type", "text/plain")}
            return httpx.Response(response.status_code, content=bytes(body), headers=kept)
    except httpx.HTTPError as exc:
        raise CapacityError(f"{redact_url(url)}: {type(exc).__name__}") from None


def _samples(text: str, url: str) -> dict[str, list]:
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as exc:
        raise CapacityError(f"{redact_url(url)}: not Prometheus text ({exc})") from None
    found: dict[str, list] = {}
    for family in families:
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def read_engine(url: str) -> EngineReport:
    """Ask the engine itself: vLLM or SGLang through /metrics, llama.cpp through /props."""
    base = url.rstrip("/").removesuffix("/v1")
    metrics = _get(f"{base}/metrics")
    samples = _samples(metrics.text, url) if metrics.status_code == 200 else {}
    if "vllm:cache_config_info" in samples:
        return _vllm(samples["vllm:cache_config_info"], base)
    if "sglang:max_total_num_tokens" in samples:
        value = int(samples["sglang:max_total_num_tokens"][0].value)
        return EngineReport(
            f"SGLang at {redact_url(base)}", "sglang", "sglang", value, "sglang:max_total_num_tokens"
        )
    props = _get(f"{base}/props")
    if props.status_code == 200:
        return _llamacpp(props, base)
    raise CapacityError(
        f"{redact_url(base)}: neither vLLM's nor SGLang's /metrics, nor llama.cpp's /props "
        "(for other engines, give --exporter-url or --prometheus-url)"
    )


def _number(labels: dict, name: str) -> int | None:
    value = labels.get(name)
    try:
        return int(float(value)) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _vllm(infos: list, base: str) -> EngineReport:
    """vLLM's cache_config_info; data-parallel engines (one sample each) are added up."""
    capacity = blocks = 0
    labels: dict = {}
    for info in infos:
        labels = info.labels
        engine_blocks = _number(labels, "num_gpu_blocks") or 0
        size = _number(labels, "kv_cache_size_tokens")
        capacity += size if size is not None else engine_blocks * (_number(labels, "block_size") or 0)
        blocks += engine_blocks
    block_size = _number(labels, "block_size")
    utilization = labels.get("gpu_memory_utilization")
    memory = _number(labels, "kv_cache_memory_bytes")
    detail = f"vllm:cache_config_info: {blocks:,} blocks x {block_size}"
    if len(infos) > 1:
        detail += f", {len(infos)} data-parallel engines added up"
    return EngineReport(
        source=f"vLLM at {redact_url(base)}",
        kind="vllm",
        engine_kind="vllm",
        capacity_tokens=capacity or None,
        detail=detail,
        blocks=blocks,
        block_size=block_size,
        gpu_memory_utilization=float(utilization) if utilization not in (None, "None") else None,
        cache_dtype=labels.get("cache_dtype"),
        max_model_len=_vllm_max_model_len(base),
        blocks_override=_number(labels, "num_gpu_blocks_override"),
        kv_cache_memory=memory,
    )


def _vllm_max_model_len(base: str) -> int | None:
    try:
        models = _get(f"{base}/v1/models").json()["data"]
        return int(models[0]["max_model_len"])
    except (CapacityError, ValueError, KeyError, IndexError, TypeError):
        return None


def _llamacpp(props: httpx.Response, base: str) -> EngineReport:
    try:
        body = props.json()
        n_ctx = int(body["default_generation_settings"]["n_ctx"])
        slots = int(body.get("total_slots", 1))
    except (ValueError, KeyError, TypeError) as exc:
        raise CapacityError(f"{redact_url(base)}/props: no n_ctx ({exc})") from None
    source = f"llama.cpp at {redact_url(base)}"
    if slots == 1:
        return EngineReport(
            source, "llamacpp", "llamacpp", n_ctx, "/props: n_ctx of its one slot", max_model_len=n_ctx
        )
    detail = (
        f"/props: n_ctx {n_ctx:,} per slot x {slots} slots: the cache holds {n_ctx * slots:,} tokens "
        f"split between the slots (the default), or {n_ctx:,} shared with --kv-unified; /props "
        "does not say which"
    )
    return EngineReport(source, "llamacpp", "llamacpp", None, detail, max_model_len=n_ctx)


def read_exporter(url: str, target: str | None = None) -> EngineReport:
    """llm_kv_cache_capacity_tokens from the exporter's /metrics (one target's, summed over engines),
    and the target's engine kind from llm_target_info."""
    base = url.rstrip("/").removesuffix("/metrics")
    response = _get(f"{base}/metrics")
    if response.status_code != 200:
        raise CapacityError(f"{redact_url(base)}/metrics: HTTP {response.status_code}")
    found = _samples(response.text, url)
    samples = [
        s for s in found.get(CAPACITY_FAMILY, []) if target is None or s.labels.get("target") == target
    ]
    kinds = {s.labels.get("target"): s.labels.get("engine_kind") for s in found.get(INFO_FAMILY, [])}
    return _from_samples(
        [(s.labels, s.value) for s in samples], f"exporter at {redact_url(base)}", "exporter", kinds
    )


def read_prometheus(url: str, target: str | None = None) -> EngineReport:
    """llm_kv_cache_capacity_tokens from Prometheus' query API (the latest value), and llm_target_info."""
    base = url.rstrip("/")
    selector = f'{{target="{target}"}}' if target else ""
    results = _query(base, CAPACITY_FAMILY + selector)
    kinds = {labels.get("target"): labels.get("engine_kind") for labels, _ in _query(base, INFO_FAMILY)}
    return _from_samples(results, f"Prometheus at {redact_url(base)}", "prometheus", kinds)


def _query(base: str, expr: str) -> list[tuple[dict, float]]:
    response = _get(f"{base}/api/v1/query", params={"query": expr})
    try:
        results = json.loads(response.content)["data"]["result"]
        return [(r["metric"], float(r["value"][1])) for r in results]
    except (ValueError, KeyError, TypeError, IndexError):
        raise CapacityError(
            f"{redact_url(base)}: not a Prometheus query answer (HTTP {response.status_code})"
        ) from None


def _from_samples(samples: list[tuple[dict, float]], source: str, kind: str, kinds: dict) -> EngineReport:
    """One target's capacity from (labels, value) pairs; kinds: target -> engine_kind."""
    if not samples:
        raise CapacityError(
            f"{source}: no {CAPACITY_FAMILY} (the engine does not publish its KV capacity, "
            "or --target names no target)"
        )
    targets = sorted({labels.get("target", "?") for labels, _ in samples})
    if len(targets) > 1:
        raise CapacityError(
            f"{source}: {CAPACITY_FAMILY} for several targets ({', '.join(targets)}): "
            "choose one with --target"
        )
    total = int(sum(value for _, value in samples))
    detail = f"{CAPACITY_FAMILY}{{target={targets[0]!r}}}"
    if len(samples) > 1:
        detail += f", {len(samples)} engines added up"
    return EngineReport(source, kind, kinds.get(targets[0]), total, detail)


# -- the comparison ---------------------------------------------------------------------------------


def explain(plan: Plan, engine: EngineReport) -> list[str]:
    """Sentences that put the engine's capacity beside the plan's and say where the difference lies."""
    if engine.capacity_tokens is None:
        return [f"{engine.source}: {engine.detail}."]
    reported, planned = engine.capacity_tokens, plan.capacity_tokens
    per_token = f"{plan.kv_bytes_per_token / 1024:g} KiB per token"
    lines = [f"{engine.source} reports {reported:,} tokens ({engine.detail}); the plan has {planned:,}."]
    if engine.engine_kind == "llamacpp":
        budget = f"; the GPU's budget would hold {planned:,}" if plan.budget is not None else ""
        lines.append(
            f"llama.cpp sizes its cache by its context (-c), not by free memory: {reported:,} tokens take "
            f"{size(plan.kv_bytes(reported))} at {per_token}{budget}."
        )
        return lines
    if engine.blocks_override:
        lines.append(
            f"Its block count was set by hand (num_gpu_blocks_override {engine.blocks_override:,}), "
            "not from memory."
        )
    difference = reported - planned
    block = plan.settings.block_size
    if abs(difference) < block:
        lines.append(f"They agree to within one block ({block} tokens): the difference is block rounding.")
        return lines
    gap = size(abs(difference) * plan.kv_bytes_per_token)
    share = f"{difference / planned:+.1%}" if planned else "the plan has none"
    direction = "fewer" if difference < 0 else "more"
    if plan.budget is None:
        lines.append(
            f"The engine holds {abs(difference):,} tokens {direction} ({share}), {gap} of KV cache at "
            f"{per_token}: its KV memory or KV dtype differs from the plan's."
        )
        return lines
    left = plan.budget - plan.weights_loaded
    implied_reserve = left - reported * plan.kv_bytes_per_token
    if implied_reserve < 0:
        lines.append(
            f"The engine holds {difference:,} tokens more ({share}): "
            f"{size(reported * plan.kv_bytes_per_token)} at {per_token}, more than the {size(left)} left of "
            "gpu_memory_utilization x GPU memory after the weights. Its KV dtype is smaller than planned "
            "(fp8 halves it), its GPU or gpu_memory_utilization is larger, or its block count was set "
            "directly."
        )
        return lines
    lines.append(
        f"The engine holds {abs(difference):,} tokens {direction} ({share}), {gap} of KV cache at "
        f"{per_token}: it kept {size(implied_reserve)} of its budget beyond the weights (the activation "
        "peak of its profiling run, CUDA graphs, memory outside PyTorch) where the plan assumed "
        f"{size(plan.reserve)} ({plan.activation_detail}). Block rounding accounts for less than one "
        f"block ({block} tokens)."
    )
    activation = max(0.0, implied_reserve - plan.non_torch - plan.settings.cuda_graph_reserve)
    lines.append(f"To plan with the engine's figure: --activation-reserve {activation / GIB:.2f}GiB.")
    return lines
