"""A real Prometheus scrapes the real exporter process (engines: a real llama-server and an SGLang-shaped
fake), and the normalized series are queryable by their documented names."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.engines.conftest import FakeEngine
from tests.support.llama import llama_server
from tests.support.procs import free_port, running
from tests.support.prometheus import prometheus_server, scrape_config

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_prometheus_queries_normalized_engine_series(tmp_path: Path, fake_engine: FakeEngine) -> None:
    fake_engine.serve_fixture("/metrics", "sglang/constructed-0.5.23-dp2-tp2.txt")
    with llama_server(tmp_path) as llama:
        for _ in range(2):
            httpx.post(f"{llama.url}/completion", json={"prompt": "hi there", "n_predict": 8}, timeout=60)
        port = free_port()
        argv = [
            sys.executable, "-m", "exporter", f"--listen-address=127.0.0.1:{port}",
            "--no-collector.gpu", "--no-collector.host",
            f"--target=llama={llama.url}", f"--target=sglang={fake_engine.url}",
            "--target=down=http://127.0.0.1:9,kind=vllm,timeout_seconds=0.5",
        ]  # fmt: skip
        exporter_log = tmp_path / "exporter.log"
        with running(argv, f"http://127.0.0.1:{port}/healthz", exporter_log):
            config = scrape_config({"exporter": [f"127.0.0.1:{port}"]})
            with prometheus_server(tmp_path, config) as prometheus:
                up = prometheus.wait_for('llm_target_up{target="llama"} == 1')
                assert up[0]["metric"]["job"] == "exporter"
                assert prometheus.wait_for('llm_target_info{target="llama",engine_kind="llamacpp"} == 1')
                tokens = prometheus.wait_for('llm_generation_tokens_total{target="llama"}')
                assert float(tokens[0]["value"][1]) == 16
                assert prometheus.wait_for('llm_target_up{target="down"} == 0')
                assert prometheus.wait_for('llm_target_errors_total{target="down",kind="connect"} > 0')
                running_reqs = prometheus.wait_for('llm_requests_running{target="sglang"}')
                assert {r["metric"]["engine_index"]: float(r["value"][1]) for r in running_reqs} == {
                    "0": 3,
                    "1": 5,
                }
                buckets = prometheus.wait_for('llm_time_to_first_token_seconds_bucket{target="sglang"}')
                assert sorted(r["metric"]["le"] for r in buckets) == ["+Inf", "0.1", "0.4"]
                ttft = 'llm_time_to_first_token_seconds_bucket{target="sglang"}'
                quantile = prometheus.wait_for(f"histogram_quantile(0.5, sum by (le) ({ttft}))")
                assert 0.1 < float(quantile[0]["value"][1]) <= 0.4
                assert prometheus.wait_for('llm_engine_info{target="llama",model="tiny-random-llama"}')
