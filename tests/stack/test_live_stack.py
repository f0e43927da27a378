"""Every dashboard and Grafana-alert query against a real Prometheus scraping a live stack.

Simulator (vLLM-shaped engine) and a real llama.cpp llama-server <- exporter (no GPU here: NVML
absent) and Prometheus (direct engine scrape); load generator -> simulator. Prometheus loads our
recording and alert rules. Each query runs twice: with the stack idle (no traffic yet), where it must
parse and return no NaN or Inf; and under load, where every query whose selectors all have data must
return data itself. On a GPU host the GPU panels are checked the same way.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from grafana import catalog
from tests.pages.drawn import drawn
from tests.pages.drawn import panels as drawn_panels
from tests.stack.dashboards import all_queries, concrete, selectors
from tests.stack.promql import RULES_DIR, VLLM_NAMES, rule_groups
from tests.support.chromium import artifacts, chromium
from tests.support.llama import LlamaServer, llama_server
from tests.support.procs import free_port, running
from tests.support.prometheus import Prometheus, prometheus_server

pytestmark = [pytest.mark.real, pytest.mark.slow]

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[2]


def _load_check_queries():
    """tools/check_queries.py, a script (tools/ is no package), loaded as a module."""
    spec = importlib.util.spec_from_file_location("check_queries", ROOT / "tools" / "check_queries.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_queries"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


check_queries = _load_check_queries()


def has_data(prometheus: Prometheus, expr: str) -> bool:
    return bool(prometheus.query(expr))


def values(result: list[dict]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("live-stack")
    with llama_server(tmp, parallel=2, ctx_size=1024) as llama:
        yield from live_stack(tmp, llama)


def live_stack(tmp: Path, llama: LlamaServer):
    sim_port, exporter_port, loadgen_port = free_port(), free_port(), free_port()
    sim = ["-m", "simulator", "--profile", "tiny", "--host", "127.0.0.1", "--port", str(sim_port)]
    exporter = [
        "-m", "exporter", "--listen-address", f"127.0.0.1:{exporter_port}",
        "--target", f"sim=http://127.0.0.1:{sim_port},kind=vllm",
        "--target", f"llama=http://127.0.0.1:{llama.port},kind=llamacpp",
        "--engine-process-pattern", "vllm=-m simulator",  # so the engine-process panels have data too
    ]  # fmt: skip
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "scrape_configs": [
            {"job_name": "llmobs-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
            {"job_name": "llmobs-loadgen", "static_configs": [{"targets": [f"127.0.0.1:{loadgen_port}"]}]},
            {
                "job_name": "engines",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{sim_port}"], "labels": {"engine_kind": "vllm"}},
                    {"targets": [f"127.0.0.1:{llama.port}"], "labels": {"engine_kind": "llamacpp"}},
                ],
            },
        ],
    }
    with (
        running([PYTHON, *sim], f"http://127.0.0.1:{sim_port}/health", tmp / "simulator.log"),
        running([PYTHON, *exporter], f"http://127.0.0.1:{exporter_port}/metrics", tmp / "exporter.log"),
        prometheus_server(tmp, config) as prometheus,
    ):
        prometheus.wait_for('up{job="llmobs-exporter"} == 1')
        prometheus.wait_for("count(vllm:num_requests_running) and count(llm_target_up == 1) == 2")
        time.sleep(4)  # a few idle scrapes, so every rate() has two samples
        idle = {where: prometheus.query(concrete(expr)) for where, expr in all_queries()}
        loadgen = [
            "-m", "loadgen", "run", "--url", f"http://127.0.0.1:{sim_port}", "--concurrency", "6", "--soak",
            "--output-len", "24", "--name", "live", "--run-id", "live1", "--progress", "none",
            "--metrics-address", f"127.0.0.1:{loadgen_port}",
        ]  # fmt: skip
        with running([PYTHON, *loadgen], f"http://127.0.0.1:{loadgen_port}/metrics", tmp / "loadgen.log"):
            prometheus.wait_for(
                "sum(increase(loadgen_requests_total{outcome='success'}[1m])) > 20", timeout=60
            )
            prometheus.wait_for(
                "instance_target_model:llm_time_to_first_token_seconds:p95_rate5m", timeout=30
            )
            yield prometheus, idle


def test_idle_stack_queries_parse_and_show_no_nan(stack) -> None:
    _, idle = stack
    bad = {
        where: values(result) for where, result in idle.items() if not all(map(math.isfinite, values(result)))
    }
    assert bad == {}


def test_loaded_stack_answers_every_query_it_has_data_for(stack) -> None:
    prometheus, _ = stack
    checked, silent, missing = [], [], []
    for where, expr in all_queries():
        query = concrete(expr)
        result = prometheus.query(query)
        assert all(map(math.isfinite, values(result))), (where, query, values(result))
        if all(has_data(prometheus, f"count({selector})") for selector in selectors(query)):
            checked.append(where)
            if not result:
                missing.append((where, query))
        else:
            silent.append(where)
    assert missing == []
    # Without a GPU, the GPU panels cannot have data; everything engine- and client-side must.
    assert len(checked) >= 0.6 * (len(checked) + len(silent)), silent


def test_both_engine_kinds_reach_the_engine_dashboard(stack) -> None:
    prometheus, _ = stack
    for metric in ["llm_requests_running", "llm_generation_tokens_total", "llm_target_info"]:
        kinds = {r["metric"]["engine_kind"] for r in prometheus.query(f"count by (engine_kind) ({metric})")}
        assert kinds == {"vllm", "llamacpp"}, metric


def test_the_simulator_serves_every_vllm_name_the_dashboards_read(stack) -> None:
    prometheus, _ = stack
    for name, kind in VLLM_NAMES.items():
        series = name + "_count" if kind == "histogram" else name
        assert has_data(prometheus, f'count({{__name__="{series}"}})'), name


def test_engine_and_client_recording_rules_have_data(stack) -> None:
    prometheus, _ = stack
    for rule in [
        "scenario_run_id:loadgen_time_to_first_token_seconds:p95_rate5m",
        "scenario_run_id:loadgen_time_to_first_token_seconds_le1:ratio_rate5m",
        "scenario_run_id:loadgen_requests_failed_per_completed:ratio_rate5m",
        "instance_target_model:llm_time_to_first_token_seconds:p95_rate5m",
        "instance_target_model:llm_time_per_output_token_seconds:mean_rate5m",
        "instance_target_model:llm_generation_tokens:rate5m",
        "instance_target_model:llm_kv_cache_usage_ratio:max",
    ]:
        assert has_data(prometheus, rule), rule


def test_every_rule_evaluates_without_error(stack) -> None:
    prometheus, _ = stack
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(len(group["rules"]) for _, group in rule_groups())
    failing = {(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"}
    assert failing == set()


def test_the_gpu_host_query_tool_finds_no_problem(stack) -> None:
    """tools/check_queries.py, run on GPU hosts, judges a live stack as the test above does."""
    prometheus, _ = stack
    result = subprocess.run(
        [PYTHON, "tools/check_queries.py", prometheus.url], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Problems: 0" in result.stdout and "queries answered with data" in result.stdout


def test_snapshot_draws_every_panel_the_query_tool_finds_data_for(stack) -> None:
    """`llmobs snapshot` of the live stack, opened in Chromium: every panel with a query that
    tools/check_queries.py answers is drawn with data (lines, heatmap, stat, rows), nothing else fails."""
    prometheus, _ = stack
    verdicts = check_queries.classify(prometheus.url)
    answered = {_panel_of(where) for where in verdicts.answered} - {None}
    out = artifacts("snapshot") / "live-stack.html"
    result = subprocess.run(
        [PYTHON, "-m", "grafana.cli", "snapshot", "--prometheus", prometheus.url, "--from", "now-4m",
         "--scrape-interval", "1s", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with chromium() as browser:
        page = browser.open(out, ready="window.llmobsReady === true", timeout=180)
        page.screenshot(out.with_suffix(".png"))
        found = drawn_panels(page)
    assert page.errors == [] and page.network == []
    assert len(found) == sum(1 for b in catalog.dashboards() for p in b.panels if p.kind != "row")
    shown: dict[tuple[str, str], list[dict]] = {}  # a title may repeat in a dashboard (a stat and a graph)
    for panel in found:
        shown.setdefault((panel["dashboard"], panel["title"]), []).append(panel)
    missing = [p for key in sorted(answered) for p in shown[key] if not (p["state"] == "data" and drawn(p))]
    assert missing == []
    undrawn = [p for p in found if p["state"] == "data" and not drawn(p)]
    assert undrawn == []
    assert len(answered) >= 40, len(answered)  # engine- and client-side panels (no GPU here)


def _panel_of(where: str) -> tuple[str, str] | None:
    """("overview", "Requests per second") from "overview.json: panel 'Requests per second' A"."""
    match = re.match(r"^(\S+)\.json: panel '(.*)' [A-Z]$", where)
    return (match.group(1), match.group(2)) if match else None


def test_selector_extraction() -> None:
    assert selectors('sum by (le) (rate(a_bucket{x=~".*", le="1.0"}[1m])) / on () (b > 0) and c{y="2"}') == [
        'a_bucket{x=~".*", le="1.0"}',
        "b",
        'c{y="2"}',
    ]
