"""Metric names: the ones docs/metrics.md promises, and the ones a PromQL expression reads.

Good enough for the expressions we write (no string escapes inside matchers beyond \\", no nested
subqueries with label lists); a test over our own rules and panels, not a PromQL parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
METRICS_DOC = ROOT / "docs" / "metrics.md"
RULES_DIR = ROOT / "prometheus" / "rules"

# vLLM 0.33's wire names that our dashboards may read when Prometheus scrapes a vLLM engine (or the
# simulator, which copies it) directly (reference: vllm/v1/metrics/loggers.py of the 0.33.0 wheel).
# The live-stack test checks each one is really served by the simulator.
VLLM_NAMES: dict[str, str] = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:num_requests_waiting_by_reason": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:cache_config_info": "gauge",
    "vllm:num_preemptions_total": "counter",
    "vllm:prompt_tokens_total": "counter",
    "vllm:prompt_tokens_by_source_total": "counter",
    "vllm:generation_tokens_total": "counter",
    "vllm:request_success_total": "counter",
    "vllm:prefix_cache_queries_total": "counter",
    "vllm:prefix_cache_hits_total": "counter",
    "vllm:iteration_tokens_total": "histogram",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
}

# vLLM's names before it renamed them, which dashboards read beside the new ones (grafana/catalog/names.py
# VLLM_OLD_NAMES); served by vLLM 0.10.2 (tests/fixtures/engines/vllm/v0.10.2-load.txt).
VLLM_OLD_NAMES: dict[str, str] = {
    "vllm:gpu_cache_usage_perc": "gauge",
    "vllm:gpu_prefix_cache_queries_total": "counter",
    "vllm:gpu_prefix_cache_hits_total": "counter",
    "vllm:time_per_output_token_seconds": "histogram",
}

BUILTIN_NAMES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}

KEYWORDS = {
    "and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "start", "end", "inf", "nan", "atan2",
}  # fmt: skip

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Contract:
    types: dict[str, str]  # metric family name -> gauge / counter / histogram

    def allows(self, name: str, recorded: set[str]) -> bool:
        if name in self.types or name in recorded or name in BUILTIN_NAMES:
            return True
        for suffix in ("_bucket", "_sum", "_count"):
            base = name.removesuffix(suffix)
            if base != name and self.types.get(base) == "histogram":
                return True
        return False


def documented_metrics(doc: Path = METRICS_DOC) -> dict[str, str]:
    """Names and types from the tables of docs/metrics.md (first column: names; a column says the type)."""
    types: dict[str, str] = {}
    for line in doc.read_text().splitlines():
        if not line.startswith("|") or line.startswith("| ---"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        kinds = ("histogram", "counter", "gauge")
        kind = next((k for k in kinds for cell in cells[1:3] if cell.startswith(k)), None)
        if kind is None:
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if _NAME.match(name):
                types[name] = kind
    return types


def contract() -> Contract:
    return Contract({**documented_metrics(), **VLLM_NAMES, **VLLM_OLD_NAMES})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\$\{?\w+(:\w+)?\}?", " 1 ", text)  # Grafana variables
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = re.sub(r"(?<![\w:.])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        token = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or token.lower() in KEYWORDS:
            continue
        names.add(token)
    return names


def rule_groups(rules_dir: Path = RULES_DIR) -> list[tuple[Path, dict]]:
    groups = []
    for path in sorted(rules_dir.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            groups.append((path, group))
    return groups


def recorded_names() -> set[str]:
    return {rule["record"] for _, group in rule_groups() for rule in group["rules"] if "record" in rule}
