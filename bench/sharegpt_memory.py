"""Memory and time of loading a ShareGPT dataset: this tree (a stream of parse events within budgets)
beside another revision's loader, on a generated file of realistic shape and on hostile files.

    .venv/bin/python bench/sharegpt_memory.py --against main              # 512 MiB file
    .venv/bin/python bench/sharegpt_memory.py --mib 1024 --against HEAD~3

The file is a JSON array of conversations of 2-8 turns of random words (human turns 40-400 words,
answers 100-800), as ShareGPT exports are. Each load runs in a process of its own (`load_sharegpt(path,
Random(0), None, TextMaker(None), turns=1)`, as a run without --output-len does); its peak RSS is the
kernel's high-water mark (VmHWM; `ru_maxrss` would include the RSS of the process it was forked from),
its time the wall clock around the call. The other revision's
`loadgen` package is taken with `git archive` into a temporary directory and imported from there.
Hostile files: a sparse file past the size budget (this tree only), one conversation of one 256 MiB
string, and a list nested 1,000,000 deep; each must be a WorkloadError, with the RSS it cost. Prints a
Markdown block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.trace_workers_memory import checkout  # noqa: E402
from loadgen.workloads import WORDS  # noqa: E402

MIB = 1024 * 1024
LOAD = """
import json, os, sys, time
import loadgen

def peak_rss():  # VmHWM: ru_maxrss after exec also counts the process it was forked from
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))

# the tree's own module (an editable install's finder would supply this tree's sharegpt.py to any tree)
if os.path.exists(os.path.join(loadgen.__path__[0], "sharegpt.py")):
    from loadgen.sharegpt import load_sharegpt
else:  # before loadgen/sharegpt.py
    from loadgen.workloads import load_sharegpt
from loadgen.errors import LoadgenError
from loadgen.workloads import TextMaker
import random
started = time.perf_counter()
try:
    prompts, error = len(load_sharegpt(sys.argv[1], random.Random(0), None, TextMaker(None), 1).items), None
except LoadgenError as exc:
    prompts, error = None, str(exc)
except Exception as exc:
    prompts, error = None, f"{type(exc).__name__} (not a WorkloadError): {str(exc)[:120]}"
print(json.dumps({"prompts": prompts, "error": error, "seconds": time.perf_counter() - started,
                  "peak_rss": peak_rss()}))
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(map(WORDS.__getitem__, rng.randbytes(rng.randint(low, high))))


def make_sharegpt(path: Path, size: int, seed: int = 1) -> int:
    """A ShareGPT file of about `size` bytes, written one conversation at a time."""
    rng = random.Random(seed)
    written, count = 0, 0
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        while written < size:
            turns = []
            for turn in range(rng.randint(1, 4) * 2):
                role = "human" if turn % 2 == 0 else "gpt"
                turns.append(
                    {"from": role, "value": words(rng, 40, 400) if role == "human" else words(rng, 100, 800)}
                )
            line = ("," if count else "") + json.dumps({"id": f"c{count}", "conversations": turns})
            out.write(line)
            written += len(line)
            count += 1
        out.write("]")
    return count


def load(tree: Path, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(path)], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return {
            "prompts": None,
            "error": done.stderr.strip().splitlines()[-1][:160],
            "seconds": None,
            "peak_rss": None,
        }
    return json.loads(done.stdout)


def hostile(workdir: Path) -> dict[str, Path]:
    sparse = workdir / "sparse.json"
    with sparse.open("wb") as out:
        out.truncate(3 * 1024**3)  # 3 GiB of zeros, none of them on disk
    string = workdir / "one-string.json"
    with string.open("w") as out:
        out.write('[{"conversations": [{"from": "human", "value": "')
        for _ in range(256):
            out.write("x" * MIB)
        out.write('"}]}]')
    nested = workdir / "nested.json"
    nested.write_text("[" * 1_000_000 + "]" * 1_000_000)
    return {"3 GiB (sparse)": sparse, "one 256 MiB string": string, "nested 1,000,000 deep": nested}


def cell(figure: float | None, fmt: str) -> str:
    return "-" if figure is None else format(figure, fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the generated file")
    parser.add_argument("--against", help="another revision to load beside this tree (e.g. main)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sharegpt-mem-") as temp:
        workdir = Path(temp)
        path = workdir / "sharegpt.json"
        log(f"generating {args.mib} MiB")
        conversations = make_sharegpt(path, args.mib * MIB)
        trees = [("this tree", ROOT)]
        if args.against:
            trees.append((args.against, checkout(args.against, workdir / "against")))
        for name, tree in trees:
            log(f"{name}: loading")
            rows.append(
                (
                    name,
                    f"{path.stat().st_size / MIB:,.0f} MiB, {conversations:,} conversations",
                    load(tree, path),
                )
            )
        for what, hostile_path in hostile(workdir).items():
            for name, tree in trees:
                if tree != ROOT and "sparse" in what:
                    continue  # read whole, 3 GiB of zeros would take 3 GiB and more before failing
                log(f"{name}: {what}")
                result = load(tree, hostile_path)
                if result["error"]:
                    result["error"] = result["error"].replace(f"{workdir}/", "")
                rows.append((name, what, result))
        load_average = os.getloadavg()
    print("ShareGPT load: peak RSS (ru_maxrss) and wall time of load_sharegpt in a process of its own")
    print()
    print("| tree | file | prompts | peak RSS MiB | seconds | error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, what, result in rows:
        peak = result["peak_rss"] / MIB if result["peak_rss"] else None
        print(f"| {name} | {what} | {cell(result['prompts'], ',')} | {cell(peak, ',.0f')} | "
              f"{cell(result['seconds'], '.1f')} | {result['error'] or ''} |")  # fmt: skip
    print()
    print(f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load_average[0]:.1f} at the end")  # fmt: skip


if __name__ == "__main__":
    main()
