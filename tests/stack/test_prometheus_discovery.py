"""prometheus.yml finds compose services by DNS (exporter and exporter-demo, loadgen and loadgen-demo)
and names each discovered target `service:port`. Checked with a real Prometheus: the job's own
relabelling applied to targets that carry the label DNS discovery gives them (`__meta_dns_name`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.stack.promql import ROOT
from tests.support.prometheus import prometheus_server

pytestmark = pytest.mark.real  # prometheus


def test_discovered_targets_are_named_after_their_compose_service(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = [job for job in config["scrape_configs"] if "dns_sd_configs" in job]
    assert {job["job_name"] for job in jobs} == {"llmobs-exporter", "llmobs-loadgen"}
    expected = {}
    scrape_configs = []
    for job in jobs:
        (dns,) = job["dns_sd_configs"]
        groups = []
        for index, name in enumerate(dns["names"], 2):
            address = f"127.0.0.{index}:{dns['port']}"  # the container's address, as DNS discovery gives it
            groups.append({"targets": [address], "labels": {"__meta_dns_name": name}})
            expected[(job["job_name"], address)] = f"{name}:{dns['port']}"
        targets_file = tmp_path / f"{job['job_name']}.json"
        targets_file.write_text(json.dumps(groups))
        scrape_configs.append(
            {
                "job_name": job["job_name"],
                "file_sd_configs": [{"files": [str(targets_file)]}],
                "relabel_configs": job["relabel_configs"],
            }
        )
    with prometheus_server(
        tmp_path, {"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs}
    ) as prom:
        deadline = time.monotonic() + 30
        while len(targets := prom.targets()) < len(expected):
            assert time.monotonic() < deadline, targets
            time.sleep(0.2)
    found = {(t["labels"]["job"], t["scrapeUrl"].split("/")[2]): t["labels"]["instance"] for t in targets}
    assert found == expected
