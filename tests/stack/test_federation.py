"""prometheus/examples/: federation and remote write, checked by promtool and run for real: an "edge"
Prometheus scrapes a real exporter and pushes by the example's remote_write to a central Prometheus that
receives remote writes, while another central one federates from the edge with the example's match[]."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.procs import free_port, running
from tests.support.prometheus import prometheus_server
from tests.support.real import require_binary

pytestmark = pytest.mark.real  # promtool, prometheus
EXAMPLES = Path(__file__).resolve().parents[2] / "prometheus" / "examples"


@pytest.mark.parametrize("name", ["central-federation.yml", "cluster-remote-write.yml"])
def test_examples_pass_promtool(name: str) -> None:
    promtool = require_binary("promtool", "apt-get install prometheus")
    done = subprocess.run(
        [promtool, "check", "config", name], cwd=EXAMPLES, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def test_remote_write_and_federation_carry_only_our_series(tmp_path: Path) -> None:
    exporter_port = free_port()
    exporter = [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{exporter_port}",
                "--no-collector.gpu"]  # fmt: skip
    (tmp_path / "receiver").mkdir()
    (tmp_path / "federator").mkdir()
    (tmp_path / "edge").mkdir()
    with (
        running(exporter, f"http://127.0.0.1:{exporter_port}/readyz", tmp_path / "exporter.log"),
        prometheus_server(tmp_path / "receiver", {"global": {"scrape_interval": "1s"}},
                          ["--web.enable-remote-write-receiver"]) as receiver,
    ):  # fmt: skip
        edge = example("cluster-remote-write.yml")
        edge["global"].update(scrape_interval="2s", scrape_timeout="2s", evaluation_interval="2s")
        edge["rule_files"] = []
        edge["scrape_configs"] = [
            {"job_name": "llmobs-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": ["127.0.0.1:1"]}]},  # not ours
        ]
        password = tmp_path / "password"
        password.write_text("not-checked-by-the-receiver")
        (write,) = edge["remote_write"]
        write.update(url=f"{receiver.url}/api/v1/write")
        write["basic_auth"]["password_file"] = str(password)
        write["queue_config"]["batch_send_deadline"] = "1s"
        with prometheus_server(tmp_path / "edge", edge) as source:
            federation = example("central-federation.yml")
            federation["global"].update(scrape_interval="2s", scrape_timeout="2s", evaluation_interval="2s")
            (job,) = federation["scrape_configs"]
            job["static_configs"] = [{"targets": [source.url.removeprefix("http://")]}]
            with prometheus_server(tmp_path / "federator", federation) as central:
                # the edge stores its scrapes without its external labels; it adds them when it sends
                assert source.wait_for('host_cpu_cores{job="llmobs-exporter"}', timeout=60)
                selector = '{job="llmobs-exporter", cluster="gpu-east"}'
                for store in (receiver, central):
                    found = store.wait_for(f"host_cpu_cores{selector}", timeout=60)
                    assert found[0]["metric"]["instance"] == f"127.0.0.1:{exporter_port}"
                    assert store.wait_for(f"exporter_build_info{selector}", timeout=30)
                assert central.wait_for(f"up{selector}", timeout=30)[0]["value"][1] == "1"
                # the edge's own series, and the down target of the job that is not ours, stay behind
                assert receiver.query('{job="prometheus"}') == []
                assert central.query('{job="prometheus"}') == []
                assert source.query('up{job="prometheus"}')  # though the edge has them
