"""A real Prometheus server (Debian's package) on loopback, and a small query client."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.procs import free_port, running
from tests.support.real import require_binary


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until expr returns at least one series."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr!r} returned no data within {timeout}s")

    def targets(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]


def scrape_config(
    jobs: dict[str, list[str]], interval: str = "1s", rule_files: list[str] | None = None
) -> dict:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": rule_files or [],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
        ],
    }


@contextlib.contextmanager
def prometheus_server(tmp_path: Path, config: dict, args: Sequence[str] = ()) -> Iterator[Prometheus]:
    """A Prometheus with `config` on a free port; `args` are extra flags."""
    binary = require_binary("prometheus", "apt-get install prometheus; `make test` does it as root")
    port = free_port()
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        *args,
    ]
    with running(argv, f"http://127.0.0.1:{port}/-/ready", tmp_path / "prometheus.log"):
        yield Prometheus(f"http://127.0.0.1:{port}")
