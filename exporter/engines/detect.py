"""Which engine serves a target: the configured kind, else the payload's metric-name prefixes.

Discovery reads the well-known metrics paths in order (`/metrics`, NIM's `/v1/metrics`, trtllm-serve's
`/prometheus/metrics`) and votes by prefix (HELP text is ignored); a bare `num_requests_running` plus
`gpu_cache_usage_perc` is NIM. Ollama, which has no exposition, answers `/api/version` with JSON.
A connection failure or timeout ends discovery at once: the target is down, not unknown.
"""

from __future__ import annotations

from exporter.engines.base import Engine, Fetch, Scraped, ScrapeError, detection_score
from exporter.engines.nim import has_bare_vllm_names
from exporter.engines.ollama import is_version_document
from exporter.engines.parse import Exposition, ParseError
from exporter.engines.registry import ENGINES

PROBE_PATHS = ("/metrics", "/v1/metrics", "/prometheus/metrics")


def engine_for_payload(exposition: Exposition) -> Engine | None:
    if has_bare_vllm_names(exposition):
        return ENGINES["nim"]
    scores = {kind: detection_score(exposition, e.prefixes) for kind, e in ENGINES.items() if e.prefixes}
    kind, score = max(scores.items(), key=lambda item: item[1])
    return ENGINES[kind] if score > 0 else None


async def discover(fetch: Fetch, explicit_path: bool) -> tuple[Engine, Scraped]:
    """Find the engine and return its first scrape; ScrapeError(unknown_engine) when nothing matches."""
    tried: list[str] = []
    for path in PROBE_PATHS[:1] if explicit_path else PROBE_PATHS:
        try:
            exposition = await fetch.metrics(path)
        except ScrapeError as exc:
            if exc.kind not in ("http_status", "parse"):
                raise
            tried.append(f"{path}: {exc}")
            continue
        except ParseError as exc:
            tried.append(f"{path}: {exc}")
            continue
        engine = engine_for_payload(exposition)
        if engine is not None:
            return engine, await engine.scrape(fetch, exposition)
        tried.append(f"{path}: no known engine metric names")
    if not explicit_path:
        try:
            if is_version_document(await fetch.json("/api/version")):
                ollama = ENGINES["ollama"]
                return ollama, await ollama.scrape(fetch)
            tried.append("/api/version: not Ollama's answer")
        except ScrapeError as exc:
            if exc.kind not in ("http_status", "parse"):
                raise
            tried.append(f"/api/version: {exc}")
    raise ScrapeError(
        "unknown_engine",
        "no engine recognised (" + "; ".join(tried) + "); llama.cpp needs --metrics, SGLang --enable-metrics",
    )
