"""What the chart's ServiceMonitor (honorLabels: true) does with the exporter's pod labels, checked with a
real Prometheus: a series that names its pod keeps it, one with the labels empty keeps them absent, and
only a series without them at all takes the exporter pod's own (the engines collector's NO_POD relies on
the second, tests/engines/test_scraper.py)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.prometheus import prometheus_server

pytestmark = pytest.mark.real  # prometheus

PAGE = (
    b'llm_requests_running{target="serving/vllm-0",namespace="serving",pod="vllm-0",container="vllm"} 2\n'
    b'llm_requests_running{target="external",namespace="",pod="",container=""} 1\n'
    b'gpu_up{gpu="0"} 1\n'
)


class _Exporter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


def test_empty_pod_labels_keep_the_exporter_pods_labels_off(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    exporter_pod = {"namespace": "monitoring", "pod": "obs-llmobs-exporter-x1", "container": "exporter"}
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "llmobs-exporter",
                "honor_labels": True,  # the ServiceMonitor's honorLabels; these labels are what it adds
                "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": exporter_pod}],
            }
        ],
    }
    try:
        with prometheus_server(tmp_path, config) as prometheus:
            prometheus.wait_for("gpu_up")
            time.sleep(1.5)
            running = {s["metric"]["target"]: s["metric"] for s in prometheus.query("llm_requests_running")}
            (gpu,) = prometheus.query("gpu_up")
    finally:
        server.shutdown()
        server.server_close()
    pod = running["serving/vllm-0"]
    assert (pod["namespace"], pod["pod"], pod["container"]) == ("serving", "vllm-0", "vllm")
    assert not {"namespace", "pod", "container"} & set(running["external"])
    assert gpu["metric"]["pod"] == "obs-llmobs-exporter-x1"  # the exporter's own series: its own pod
