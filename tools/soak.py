"""`make soak`: simulator + exporter + load generator + Prometheus for a while; fails on growth or lost data.

    python tools/soak.py --duration 10m --out out/soak          # make soak [SOAK_DURATION=1h]

All four run as real processes on 127.0.0.1 (Prometheus is Debian's `prometheus`; it scrapes the
exporter, the simulator and the load generator every 2 s). Every 10 s the RSS, open file descriptors and
threads of each process go into `resources.csv`. At the end:

- growth: for the simulator, the exporter and the load generator, each of RSS, FDs and threads fails
  when BOTH its Theil-Sen slope after the warm-up (the first third of the run, at most 3 minutes, is left
  out) projects past the hourly allowance AND the median of the last third of those samples exceeds the
  median of the first third by more than the floor (GROWTH_RULES). The slope catches a slow leak over a
  long run; the floor keeps a short run's noise from failing. Prometheus is sampled, not judged: its
  head block grows by design until it is compacted.
- accounting, exact: the load generator's successful requests, prompt tokens and output tokens (its
  report) = the simulator's own counters = the increase of the exporter's llm_* series for the target =
  the same series as Prometheus last scraped them; and nothing failed. The load generator is given a
  tokenizer, so it sends no calibration probes that its report would not count.

`summary.json` holds the verdicts and figures; the exit status is 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]
SCRAPE_INTERVAL_S = 2
WARMUP_MAX_S = 180.0


@dataclass(frozen=True)
class GrowthRule:
    per_hour: float  # allowance for the post-warm-up slope, projected to an hour
    floor: float  # allowance for last-third median minus first-third median


GROWTH_RULES = {
    "rss_bytes": GrowthRule(per_hour=10 * 2**20, floor=3 * 2**20),
    "fds": GrowthRule(per_hour=4, floor=2),
    "threads": GrowthRule(per_hour=4, floor=2),
}
JUDGED = ("simulator", "exporter", "loadgen")


def parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


# growth


def theil_sen(times: list[float], values: list[float]) -> float:
    """Median of the slopes between every pair of samples: one outlier cannot tilt it."""
    slopes = [
        (v2 - v1) / (t2 - t1)
        for (t1, v1), (t2, v2) in itertools.combinations(zip(times, values, strict=True), 2)
        if t2 > t1
    ]
    return statistics.median(slopes) if slopes else 0.0


def warmup_s(duration_s: float) -> float:
    return min(WARMUP_MAX_S, duration_s / 3)


def judge_growth(times: list[float], values: list[float], warmup: float, rule: GrowthRule) -> dict:
    kept = [(t, v) for t, v in zip(times, values, strict=True) if t >= warmup]
    if len(kept) < 6:
        return {"ok": False, "why": f"only {len(kept)} samples after the warm-up"}
    t, v = [p[0] for p in kept], [p[1] for p in kept]
    third = len(v) // 3
    slope_per_hour = theil_sen(t, v) * 3600
    growth = statistics.median(v[-third:]) - statistics.median(v[:third])
    ok = not (slope_per_hour > rule.per_hour and growth > rule.floor)
    return {"ok": ok, "slope_per_hour": slope_per_hour, "growth": growth, "first": v[0], "last": v[-1]}


# processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def started(name: str, argv: list[str], ready_url: str, out: Path) -> Iterator[subprocess.Popen]:
    log = open(out / f"{name}.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {out / name}.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {ready_url} within 60 s")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


class Sampler:
    """RSS, FDs and threads of each named pid every interval, into a CSV, from a background thread."""

    def __init__(self, path: Path, interval_s: float) -> None:
        self.path, self.interval_s = path, interval_s
        self.pids: dict[str, int] = {}
        self.rows: list[dict] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with open(self.path, "w", newline="") as file:
            writer = csv.DictWriter(file, ["elapsed_s", "process", "pid", "rss_bytes", "fds", "threads"])
            writer.writeheader()
            while not self._stop.is_set():
                elapsed = round(time.monotonic() - self.started, 1)
                for name, pid in list(self.pids.items()):
                    with contextlib.suppress(psutil.Error):
                        process = psutil.Process(pid)
                        with process.oneshot():
                            row = {
                                "elapsed_s": elapsed, "process": name, "pid": pid,
                                "rss_bytes": process.memory_info().rss, "fds": process.num_fds(),
                                "threads": process.num_threads(),
                            }  # fmt: skip
                        writer.writerow(row)
                        self.rows.append(row)
                file.flush()
                self._stop.wait(self.interval_s)


# accounting


def samples(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(values: dict[tuple[str, frozenset], float], name: str, **match: str) -> float:
    wanted = set(match.items())
    return sum(v for (n, labels), v in values.items() if n == name and wanted <= labels)


ENGINE_COUNTERS = {  # what we compare -> (simulator's vLLM name, exporter's llm_* name)
    "requests": ("vllm:request_success_total", "llm_requests_finished_total"),
    "prompt_tokens": ("vllm:prompt_tokens_total", "llm_prompt_tokens_total"),
    "output_tokens": ("vllm:generation_tokens_total", "llm_generation_tokens_total"),
}


def prometheus_value(url: str, expr: str) -> float:
    result = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


def accounting(report: dict, sim_url: str, exporter_url: str, prom_url: str, before: dict) -> dict:
    requests = report["totals"]
    phase_tokens = [phase["tokens"] for phase in report["phases"]]
    loadgen = {
        "requests": requests["by_outcome"].get("success", 0),
        "prompt_tokens": sum(t["prompt"] for t in phase_tokens),
        "output_tokens": sum(t["output"] for t in phase_tokens),
    }
    sim, exporter = samples(f"{sim_url}/metrics"), samples(f"{exporter_url}/metrics")
    views: dict[str, dict[str, float]] = {
        "loadgen": loadgen,
        "simulator": {},
        "exporter": {},
        "prometheus": {},
    }
    for what, (vllm_name, llm_name) in ENGINE_COUNTERS.items():
        views["simulator"][what] = total(sim, vllm_name)
        views["exporter"][what] = total(exporter, llm_name, target="sim") - before[what]
        expr = f'sum({llm_name}{{target="sim"}}) - {before[what]}'
        views["prometheus"][what] = prometheus_value(prom_url, expr)
    failed = {k: v for k, v in requests["by_outcome"].items() if k != "success" and v}
    exact = all(len({view[what] for view in views.values()}) == 1 for what in ENGINE_COUNTERS)
    sent_ok = requests["sent"] == requests["finished"] == loadgen["requests"]
    return {
        "ok": exact and not failed and sent_ok,
        "views": views,
        "failed": failed,
        "sent": requests["sent"],
    }


def wait_prometheus_caught_up(prom_url: str, exporter_url: str, timeout: float = 30) -> None:
    """Until Prometheus's last exporter sample equals what the exporter serves now (no traffic any more)."""
    want = total(samples(f"{exporter_url}/metrics"), "llm_requests_finished_total", target="sim")
    deadline = time.monotonic() + timeout
    while prometheus_value(prom_url, 'sum(llm_requests_finished_total{target="sim"})') != want:
        if time.monotonic() > deadline:
            return  # the comparison will show the difference
        time.sleep(SCRAPE_INTERVAL_S / 2)


# the run


def word_tokenizer(directory: Path) -> Path:
    """A word-level tokenizer over the load generator's synthetic words (no calibration probes then)."""
    import tokenizers

    from loadgen.workloads import WORDS

    vocab = {"[UNK]": 0} | {word: i + 1 for i, word in enumerate(dict.fromkeys(WORDS))}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory / "tokenizer.json"


def run(duration_s: float, out: Path, concurrency: int, sample_interval_s: float) -> dict:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit(
            "soak: prometheus not found (apt-get install prometheus; make soak installs it as root)"
        )
    sim_port, exporter_port, loadgen_port, prom_port = (free_port() for _ in range(4))
    sim_url, exporter_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{exporter_port}"
    prom_url, loadgen_url = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{loadgen_port}"
    jobs = {"exporter": exporter_url, "simulator": sim_url, "loadgen": loadgen_url}
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [url.removeprefix("http://")]}]}
            for job, url in jobs.items()
        ],
    }
    (out / "prometheus.yml").write_text(yaml.safe_dump(config))
    tokenizer = word_tokenizer(out)
    with contextlib.ExitStack() as stack:
        sampler = stack.enter_context(Sampler(out / "resources.csv", sample_interval_s))
        sim = stack.enter_context(started(
            "simulator", [PYTHON, "-m", "simulator", "--profile", "tiny", "--host", "127.0.0.1",
                          "--port", str(sim_port)], f"{sim_url}/health", out))  # fmt: skip
        sampler.pids["simulator"] = sim.pid
        exporter = stack.enter_context(started(
            "exporter", [PYTHON, "-m", "exporter", "--listen-address", f"127.0.0.1:{exporter_port}",
                         "--target", f"sim={sim_url},kind=vllm"], f"{exporter_url}/readyz", out))  # fmt: skip
        sampler.pids["exporter"] = exporter.pid
        prom = stack.enter_context(started(
            "prometheus", [prometheus, f"--config.file={out / 'prometheus.yml'}",
                           f"--storage.tsdb.path={out / 'tsdb'}",
                           f"--web.listen-address=127.0.0.1:{prom_port}"],
            f"{prom_url}/-/ready", out))  # fmt: skip
        sampler.pids["prometheus"] = prom.pid
        exporter_now = samples(f"{exporter_url}/metrics")
        before = {what: total(exporter_now, llm, target="sim") for what, (_, llm) in ENGINE_COUNTERS.items()}
        loadgen_argv = [
            PYTHON, "-m", "loadgen", "run", "--url", sim_url, "--concurrency", str(concurrency),
            "--duration", f"{duration_s:.0f}s", "--output-len", "uniform:8:64",
            "--input-len", "uniform:32:256",
            "--tokenizer", str(tokenizer), "--name", "soak", "--run-id", "soak", "--progress", "none",
            "--metrics-address", f"127.0.0.1:{loadgen_port}", "--output-json", str(out / "report.json"),
        ]  # fmt: skip
        with open(out / "loadgen.log", "wb") as log:
            loadgen = subprocess.Popen(loadgen_argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            sampler.pids["loadgen"] = loadgen.pid
            try:
                loadgen.wait(timeout=duration_s + 120)
            finally:
                if loadgen.poll() is None:
                    loadgen.kill()
                    loadgen.wait()
        alive = {name: p.poll() is None for name, p in [("simulator", sim), ("exporter", exporter)]}
        wait_prometheus_caught_up(prom_url, exporter_url)
        report = json.loads((out / "report.json").read_text()) if loadgen.returncode == 0 else None
        books = accounting(report, sim_url, exporter_url, prom_url, before) if report else {"ok": False}
    return summarize(sampler.rows, duration_s, loadgen.returncode, alive, books)


def summarize(rows: list[dict], duration_s: float, loadgen_rc: int, alive: dict, books: dict) -> dict:
    warmup = warmup_s(duration_s)
    growth: dict[str, dict[str, dict]] = {}
    for name in JUDGED:
        mine = [row for row in rows if row["process"] == name]
        times = [float(row["elapsed_s"]) - float(mine[0]["elapsed_s"]) for row in mine] if mine else []
        growth[name] = {
            what: judge_growth(times, [float(row[what]) for row in mine], warmup, rule)
            for what, rule in GROWTH_RULES.items()
        }
    growth_ok = all(v["ok"] for per in growth.values() for v in per.values())
    ok = growth_ok and books["ok"] and loadgen_rc == 0 and all(alive.values())
    return {
        "ok": ok, "duration_s": duration_s, "warmup_s": warmup, "loadgen_exit": loadgen_rc,
        "alive_at_end": alive, "growth": growth, "accounting": books,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", default=os.environ.get("SOAK_DURATION", "10m"), help="e.g. 90s, 10m, 1h"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "out" / "soak", help="folder for CSV, logs, summary"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop users (default 4)")
    parser.add_argument("--sample-interval", type=float, default=10.0, help="seconds between samples (10)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = run(parse_duration(args.duration), args.out, args.concurrency, args.sample_interval)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(render(summary))
    return 0 if summary["ok"] else 1


def render(summary: dict) -> str:
    lines = [
        f"soak {summary['duration_s']:.0f} s (warm-up {summary['warmup_s']:.0f} s left out of the slopes)"
    ]
    for name, per in summary["growth"].items():
        for what, verdict in per.items():
            if "slope_per_hour" not in verdict:
                lines.append(f"  {name:9} {what:9} FAIL {verdict['why']}")
                continue
            scale = 2**20 if what == "rss_bytes" else 1
            unit = " MB" if what == "rss_bytes" else ""
            first, last = verdict["first"] / scale, verdict["last"] / scale
            slope, growth = verdict["slope_per_hour"] / scale, verdict["growth"] / scale
            lines.append(
                f"  {name:9} {what:9} {'ok  ' if verdict['ok'] else 'FAIL'} first {first:.1f}{unit}"
                f" last {last:.1f}{unit} slope {slope:+.2f}{unit}/h growth {growth:+.2f}{unit}"
            )
    books = summary["accounting"]
    if "views" in books:
        for view, values in books["views"].items():
            lines.append(f"  {view:10} " + "  ".join(f"{k} {v:.0f}" for k, v in values.items()))
        lines.append(
            f"  accounting {'exact' if books['ok'] else 'NOT EXACT'}; failed requests: {books['failed'] or 0}"
        )
    else:
        lines.append(f"  accounting not done: load generator exit status {summary['loadgen_exit']}")
    lines.append(f"  alive at the end: {summary['alive_at_end']}")
    lines.append("PASS" if summary["ok"] else "FAIL")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
