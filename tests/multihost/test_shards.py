"""A run over hosts, on this machine: network namespaces as hosts (tests/support/netns.py).

Three engine hosts, each with a simulator and an exporter, behind one virtual IP that each load-generator
host balances per connection as kube-proxy does (iptables DNAT); two load-generator shards, each on a
host of its own, started together with --start-at; Prometheus (Debian's) in the root namespace
scraping all eight through file service discovery. Mid-run, one engine host's link is cut.

Checked: Prometheus's sums over the shards = the merged report (every outcome, tokens); every request
the shards sent is accounted for exactly once against the simulators' own records of what they served
(by request id): answered ones by exactly one host, those lost with the cut link by the cut host or by
none, none served twice, none served that no shard sent; the simulators' counters = what they served;
the cut host's targets go down in Prometheus while the others stay up; the load-test dashboard's
queries answer for the run with no `shard` left in their results.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from loadgen.cli import main as loadgen_main
from tests.stack.dashboards import concrete, dashboards, queries
from tests.support.netns import Network, require_netns
from tests.support.procs import wait_http
from tests.support.prometheus import Prometheus, prometheus_server

pytestmark = pytest.mark.real

ENGINES = ("h0", "h1", "h2")
SHARDS = ("lg0", "lg1")
CUT = "h2"
RUN = "multihost"
PYTHON = sys.executable


@dataclass
class Fleet:
    net: Network
    prometheus: Prometheus
    vip: str
    out: Path

    def url(self, host: str, port: int) -> str:
        return f"http://{self.net.address(host)}:{port}"


def _targets(net: Network, out: Path) -> Path:
    """File service discovery: every host's targets, labelled with the host."""
    groups = [{"targets": [f"{net.address(h)}:8000"], "labels": {"job": "vllm", "host": h}} for h in ENGINES]
    groups += [{"targets": [f"{net.address(h)}:9840"], "labels": {"job": "llmobs-exporter", "host": h}}
               for h in ENGINES]  # fmt: skip
    groups += [{"targets": [f"{net.address(h)}:9841"], "labels": {"job": "llmobs-loadgen", "host": h}}
               for h in SHARDS]  # fmt: skip
    path = out / "targets.json"
    path.write_text(json.dumps(groups))
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_netns()
    out = tmp_path_factory.mktemp("multihost")
    with Network([*ENGINES, *SHARDS]) as net:
        vip = f"{net.prefix}100"
        simulator = [PYTHON, "-m", "simulator", "--profile", "tiny", "--port", "8000", "--seed", "1",
                     "--time-scale", "0.2", "--record-sends", "100000"]  # fmt: skip
        exporter = [PYTHON, "-m", "exporter", "--listen-address", "0.0.0.0:9840",
                    "--target", "sim=http://127.0.0.1:8000,kind=vllm"]  # fmt: skip
        for host in ENGINES:
            net.start(host, simulator, out / f"{host}-simulator.log")
            net.start(host, exporter, out / f"{host}-exporter.log")
        for host in SHARDS:
            net.balance(host, vip, 8000, list(ENGINES))
        for host in ENGINES:
            wait_http(f"http://{net.address(host)}:8000/health", timeout=90)
            wait_http(f"http://{net.address(host)}:9840/readyz", timeout=90)
        discovery = {"files": [str(_targets(net, out))], "refresh_interval": "1s"}
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "hosts", "honor_labels": True, "file_sd_configs": [discovery]}],
        }
        with prometheus_server(out, config) as prometheus:
            yield Fleet(net, prometheus, vip, out)


def _run_shards(fleet: Fleet, tokenizer: Path) -> tuple[list[Path], float]:
    """Both shards, started together; the link of CUT is cut in the middle of the run."""
    start_at = time.time() + 8  # after both shards' setup
    reports = [fleet.out / f"report-{i}.json" for i in range(len(SHARDS))]
    processes = [
        fleet.net.start(host, [
            PYTHON, "-m", "loadgen", "run", "--url", f"http://{fleet.vip}:8000", "--concurrency", "6",
            "--duration", "8s", "--output-len", "8", "--input-len", "16", "--tokenizer", str(tokenizer),
            "--shard", f"{i}/{len(SHARDS)}", "--run-id", RUN, "--start-at", f"{start_at:.3f}",
            "--metrics-address", "0.0.0.0:9841", "--metrics-linger", "6s", "--connect-timeout", "1s",
            "--read-timeout", "2s", "--grace", "3s", "--progress", "none",
            "--output-json", str(reports[i]), "--output-jsonl", str(fleet.out / f"requests-{i}.jsonl"),
        ], fleet.out / f"{host}-loadgen.log")
        for i, host in enumerate(SHARDS)
    ]  # fmt: skip
    time.sleep(max(0.0, start_at + 4 - time.time()))
    fleet.net.cut(CUT)
    cut_at = time.time()
    for process in processes:
        process.wait(timeout=120)
    fleet.net.mend(CUT)  # to read what it served
    assert all(p.returncode == 0 for p in processes), [p.returncode for p in processes]
    return reports, cut_at


def _word_tokenizer(directory: Path) -> Path:
    """A word-level tokenizer over the load generator's words: prompts counted without setup requests."""
    import tokenizers

    from loadgen.workloads import WORDS

    vocab = {"[UNK]": 0, **{word: i + 1 for i, word in enumerate(dict.fromkeys(WORDS))}}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def _query(prometheus: Prometheus, expr: str, at: float | None = None) -> list[dict]:
    params = {"query": expr, **({"time": at} if at else {})}
    return httpx.get(f"{prometheus.url}/api/v1/query", params=params, timeout=10).json()["data"]["result"]


def _value(prometheus: Prometheus, expr: str, at: float | None = None) -> float:
    return sum(float(r["value"][1]) for r in _query(prometheus, expr, at))


def _served_counter(url: str) -> float:
    """vllm:request_success_total as the simulator serves it now, summed over finished reasons."""
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("vllm:request_success_total{")
    )


def _sent_ids(fleet: Fleet) -> dict[str, str]:
    records = {}
    for i in range(len(SHARDS)):
        for line in (fleet.out / f"requests-{i}.jsonl").read_text().splitlines():
            record = json.loads(line)
            records[record["request_id"]] = record["outcome"]
    return records


def test_shards_over_hosts_add_up_and_a_cut_link_is_seen(fleet: Fleet) -> None:
    reports, cut_at = _run_shards(fleet, _word_tokenizer(fleet.out))
    assert loadgen_main(["merge", *map(str, reports), "-o", str(fleet.out / "merged.json")]) == 0
    merged = json.loads((fleet.out / "merged.json").read_text())
    phase = merged["phases"][0]
    outcomes = {k: v for k, v in phase["requests"]["by_outcome"].items() if v}
    assert outcomes["success"] > 100 and outcomes.get("timeout", 0) + outcomes.get("connect", 0) > 0, outcomes
    assert "setup_requests" not in merged  # a tokenizer: no calibration requests in the engines' counters

    # Prometheus's sums over the shards = the merged report (the shards lingered for the last scrapes)
    run = f'run_id="{RUN}"'
    for outcome, count in outcomes.items():
        expr = f'sum(max_over_time(loadgen_requests_total{{{run}, outcome="{outcome}"}}[5m]))'
        assert _value(fleet.prometheus, expr) == count, outcome
    assert _value(fleet.prometheus, f"sum(max_over_time(loadgen_requests_sent_total{{{run}}}[5m]))") == phase[
        "requests"]["sent"]  # fmt: skip
    assert _value(fleet.prometheus, f"sum(max_over_time(loadgen_output_tokens_total{{{run}}}[5m]))") == phase[
        "tokens"]["output"]  # fmt: skip
    middle = cut_at - 2  # the run under way, every link up
    shards = _query(fleet.prometheus, f"loadgen_run_info{{{run}}}", middle)
    assert sorted(r["metric"]["shard"] for r in shards) == ["0", "1"]  # one run_id, a shard label each

    # every request once: by the simulators' own records of what they served (request ids)
    sent = _sent_ids(fleet)
    served: dict[str, set[str]] = {}
    for host in ENGINES:
        log = httpx.get(f"{fleet.url(host, 8000)}/_simulator/sends", timeout=30).json()
        served[host] = {rid for rid, record in log.items() if rid.startswith(f"{RUN}-") and record["done_ns"]}
    everywhere = [rid for ids in served.values() for rid in ids]
    assert len(everywhere) == len(set(everywhere)), "a request served twice"
    assert set(everywhere) <= set(sent), "a request served that no shard sent"
    answered = {rid for rid, outcome in sent.items() if outcome == "success"}
    assert answered <= set(everywhere), "a request answered that no engine served"
    for rid in set(everywhere) - answered:  # served, but its answer was lost with the link
        assert rid in served[CUT] and sent[rid] in ("timeout", "stream_broken"), (rid, sent[rid])
    for rid, outcome in sent.items():
        if outcome == "connect":  # never reached an engine
            assert rid not in set(everywhere)
    assert all(served[host] for host in ENGINES), "the virtual IP spread connections over every host"

    # each simulator's counter = what it served; Prometheus read the same from the hosts that stayed up
    for host in ENGINES:
        counted = _value(
            fleet.prometheus, f'sum(max_over_time(vllm:request_success_total{{host="{host}"}}[5m]))'
        )
        direct = _served_counter(fleet.url(host, 8000))
        assert direct == len(served[host]), host
        if host != CUT:
            assert counted == direct, host

    # the cut link is seen: the cut host's targets went down, the others' did not
    during = cut_at + 3
    for job in ("vllm", "llmobs-exporter"):
        up = {
            r["metric"]["host"]: r["value"][1] for r in _query(fleet.prometheus, f'up{{job="{job}"}}', during)
        }
        assert up == {"h0": "1", "h1": "1", "h2": "0"}, (job, up)

    # the load-test dashboard adds the shards up: no query leaves a shard label, the main ones answer
    answered_panels = []
    for where, expr in queries(dashboards()["load-tests.json"]):
        if not where.startswith("panel "):
            continue  # template variables list label values, shards' included
        result = _query(fleet.prometheus, concrete(expr), middle)
        assert not any("shard" in r["metric"] for r in result), where
        answered_panels += [where] if result else []
    for title in ("Requests sent", "Time to first token", "Offered and achieved", "Concurrency"):
        assert any(title in where for where in answered_panels), title
