"""User-space CPU instructions per request of llmobs-loadgen, counted by valgrind (callgrind), for
this tree and, side by side, another git revision.

    .venv/bin/python bench/loadgen_cost.py                  # this tree
    .venv/bin/python bench/loadgen_cost.py --against 52c1594  # and that revision, same mock

Why: on a shared 2-core machine requests/s moves by tens of percent from run to run, so a change that
saves 3 % of the client's CPU cannot be seen in loadgen_bench.py. Instructions are counted, not timed:
two runs of the same tree agree within 0.2 %. Each tree runs a closed loop (50 streams, 10 tokens per
request) against the fast mock twice, for N1 and N2 requests; (instructions(N2) - instructions(N1)) /
(N2 - N1) is the cost per request without start-up. Kernel work (send, epoll) is not counted, and an
instruction is not a cycle, so this ranks changes; loadgen_bench.py remains the capacity figure.
Needs valgrind (Debian package `valgrind`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen_bench import mock_server  # noqa: E402

PYTHON = ROOT / ".venv" / "bin" / "python"


def instructions(tree: Path, url: str, requests: int) -> int:
    argv = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        str(PYTHON), "-m", "loadgen", "run", "--url", url, "--model", "m", "--concurrency", "50",
        "--requests", str(requests), "--output-len", "10", "--input-len", "32",
        "--metrics-address", "none", "--progress", "none", "--output-json", "/dev/null",
    ]  # fmt: skip
    # run from `tree`: `python -m loadgen` imports the loadgen package of the working directory
    result = subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"loadgen under valgrind failed in {tree}: {result.stderr[-2000:]}")
    return int(found.group(1))


def per_request(tree: Path, url: str, low: int, high: int) -> float:
    return (instructions(tree, url, high) - instructions(tree, url, low)) / (high - low)


def worktree(revision: str) -> Path:
    path = ROOT / ".cache" / f"cost-{revision}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), revision], cwd=ROOT, check=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="a git revision to measure beside this tree")
    parser.add_argument("--low", type=int, default=1000, help="requests of the shorter run")
    parser.add_argument("--high", type=int, default=4000, help="requests of the longer run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    trees = {"this tree": ROOT}
    if args.against:
        trees[args.against] = worktree(args.against)
    workdir = ROOT / ".cache"
    workdir.mkdir(exist_ok=True)
    with mock_server(workdir, "--fast", "--no-records") as url:
        costs = {name: per_request(tree, url, args.low, args.high) for name, tree in trees.items()}
    print("| tree | instructions per request (user space) |\n| --- | ---: |")
    for name, cost in costs.items():
        print(f"| {name} | {cost:,.0f} |")
    if args.against:
        change = costs["this tree"] / costs[args.against] - 1
        print(f"\nthis tree vs {args.against}: {change:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
