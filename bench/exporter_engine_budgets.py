"""The exporter against hostile engines: scrape time and memory over many rounds, this tree beside another
revision, against the same hostile engine (tests/faults/hostile_engine.py).

    .venv/bin/python bench/exporter_engine_budgets.py                               # this tree, 1,000 rounds
    .venv/bin/python bench/exporter_engine_budgets.py --against 3cedf21 --against-rounds 100

Two phases per tree, each a fresh exporter process (host collector and engines; no GPU here):
1. `300k`: a good engine (vLLM 0.33's real /metrics) and one target serving 300,000 valid series
   (22 MB), scraped 20 times: the exporter's scrape time (p50, max) and its RSS after.
2. `hostile`: the good engine beside targets that send 300,000 series, 30 MB (chunked), 40 MB (announced),
   40 MB in one endless line, a trickle (deadline 0.5 s), hostile values and a broken line; scraped
   ROUNDS times back to back: scrape time (p50, p99, max), rounds whose scrape passed the documented cap
   (longest target deadline + 0.5 s), and the RSS after round 50 beside the last and the largest sampled
   (every 50 rounds). A scrape that fails is counted and the run goes on.
Each tree is run from its own directory (`python -m exporter` imports the exporter of the working directory)
with this tree's virtual environment. Last, the CPU time to parse 50,000 series (the default series
budget; median of 5) with each tree's parser and with prometheus_client's, which the exporter does not use
(exporter/README.md says why). Prints markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.hostile_engine import series  # noqa: E402
from tests.support.procs import free_port, wait_http  # noqa: E402

PYTHON = ROOT / ".venv" / "bin" / "python"
DEADLINE = 2.0  # the default target deadline, both trees


@contextlib.contextmanager
def process(argv: list[str], cwd: Path, ready_url: str, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_http(ready_url, timeout=120, process=proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def targets(engine: str, names: list[str]) -> list[str]:
    args = []
    for name in names:
        timeout = ",timeout_seconds=0.5" if name == "trickle" else ""
        args += ["--target", f"{name}={engine}/{name}/metrics,kind=vllm{timeout}"]
    return args


def run_phase(tree: Path, engine: str, names: list[str], rounds: int, log: Path) -> dict:
    port = free_port()
    argv = [str(PYTHON), "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", "--no-collector.gpu"]
    url = f"http://127.0.0.1:{port}"
    durations, failed, rss, over_cap = [], 0, {}, 0
    with process([*argv, *targets(engine, names)], tree, f"{url}/healthz", log) as proc:
        exporter = psutil.Process(proc.pid)
        with httpx.Client(timeout=60) as client:
            for number in range(1, rounds + 1):
                started = time.monotonic()
                try:
                    ok = client.get(f"{url}/metrics").status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.monotonic() - started
                durations.append(elapsed)
                failed += not ok
                over_cap += elapsed > DEADLINE + 0.5
                if number % 50 == 0 or number in (1, rounds):
                    rss[number] = exporter.memory_info().rss / 2**20
    ordered = sorted(durations)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
        "failed": failed,
        "over_cap": over_cap,
        "rss_start": rss.get(50, rss[1]),
        "rss_end": rss[rounds],
        "rss_max": max(rss.values()),
        "rounds": rounds,
    }


PARSE = """
import sys, time
text = sys.stdin.read()
{setup}
times = []
for _ in range(5):
    started = time.process_time()
    {call}
    times.append(time.process_time() - started)
print(sorted(times)[2])
"""


def parse_seconds(tree: Path, setup: str, call: str) -> float:
    code = PARSE.format(setup=setup, call=call)
    payload = series(50_000).decode()
    argv = [str(PYTHON), "-c", code]
    result = subprocess.run(argv, cwd=tree, input=payload, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def worktree(revision: str) -> Path:
    path = ROOT / ".cache" / f"bench-{revision}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), revision], cwd=ROOT, check=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="hostile rounds for this tree")
    parser.add_argument("--against", help="another git revision, run the same way")
    parser.add_argument("--against-rounds", type=int, default=100, help="hostile rounds for --against")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-engine-budgets")
    parser.add_argument("--parse-only", action="store_true", help="only the parser's CPU time")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    trees = [("this tree", ROOT, args.rounds)]
    if args.against:
        trees.append((args.against, worktree(args.against), args.against_rounds))
    port = free_port()
    engine_argv = [str(PYTHON), "-m", "tests.faults.hostile_engine", "--port", str(port)]
    engine = f"http://127.0.0.1:{port}"
    rows = []
    with process(engine_argv, ROOT, f"{engine}/health/metrics", args.out / "engine.log"):
        for label, tree, rounds in [] if args.parse_only else trees:
            for phase, names, count in (
                ("300k", ["fine", "series"], 20),
                (
                    "hostile",
                    ["fine", "series", "big", "huge", "endless", "trickle", "values", "secret"],
                    rounds,
                ),
            ):
                log = args.out / f"exporter-{label.replace(' ', '-')}-{phase}.log"
                result = run_phase(tree, engine, names, count, log)
                rows.append((label, phase, result))
                print(label, phase, {k: round(v, 3) for k, v in result.items()}, flush=True)
    ours = "from exporter.engines.parse import parse", "parse(text)"
    parsers = [(label, tree, *ours) for label, tree, _ in trees]
    parsers.append(
        (
            "prometheus_client",
            ROOT,
            "from prometheus_client.parser import text_string_to_metric_families as parse",
            "list(parse(text))",
        )
    )
    print("\n| parser | CPU for 50,000 series | per series |\n| --- | ---: | ---: |")
    for label, tree, setup, call in parsers:
        seconds = parse_seconds(tree, setup, call)
        print(f"| {label} | {seconds:.3f} s | {seconds / 50_000 * 1e6:.1f} us |")
    if not rows:
        return 0
    print("\n| tree | phase | rounds | scrape p50 | p99 | max | over cap | failed | RSS warm | last | max |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, phase, r in rows:
        print(
            f"| {label} | {phase} | {r['rounds']} | {r['p50']:.2f} s | {r['p99']:.2f} s | {r['max']:.2f} s | "
            f"{r['over_cap']} | {r['failed']} | {r['rss_start']:.0f} MB | {r['rss_end']:.0f} MB | "
            f"{r['rss_max']:.0f} MB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
