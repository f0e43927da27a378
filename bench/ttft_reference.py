#!/usr/bin/env python3
"""Our TTFT/TPOT beside an independent reference client's (tests/support/reference_client.py: raw asyncio
streams, no code shared with the load generator) on a real llama.cpp server, in repeated rounds, so the
spread between rounds of the same client is printed beside any difference between the clients.

Issue 17's case: llama-server (CUDA, `-np 64`) on a random model shaped like Qwen3-4B, 50 users,
50 output tokens with `ignore_eos`. Each round draws fresh prompts (its own seed, the same for both
clients) and runs, per --mode:
  alternating   ours alone with USERS users, then the reference alone (order swapped every round), as
                two benchmark runs one after the other would be;
  simultaneous  both at once, USERS/2 users each, prompt halves swapped every round: the same server
                state and load for both, so what differs is the clients.
`--idle-slot-cache` keeps llama-server's default `--cache-idle-slots` (off by default here, with
`cache_prompt: false` in every body: loadgen/README.md, "TTFT between identical runs").

    python bench/ttft_reference.py --rounds 6 --mode alternating --out out/ttft-reference.json
    python bench/ttft_reference.py --rounds 6 --mode simultaneous --out out/ttft-reference-sim.json

Needs the CUDA llama-server that tools/gpu-stack-check.sh builds (LLAMA_BUILD_SUFFIX=-cuda, built by
tools/build-llama-server.sh with LLAMA_EXTRA_CMAKE_ARGS="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90")
and this project's environment (`pip install -e '.[dev]'`). --shape TINY runs on a CPU build in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen.workloads import random_words  # noqa: E402
from tests.support import llama  # noqa: E402


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": statistics.median(ordered), "p90": pick(0.9), "p99": pick(0.99), "n": len(ordered)}


def ours(url: str, model: str, texts: list[str], users: int, args, work: Path, tag: str) -> subprocess.Popen:
    dataset = work / f"{tag}.jsonl"
    dataset.write_text(
        "".join(json.dumps({"prompt": t, "max_tokens": args.output_tokens}) + "\n" for t in texts)
    )
    argv = [
        sys.executable, "-m", "loadgen", "run", "--url", url, "--model", model,
        "--dataset", f"jsonl:{dataset}", "--concurrency", str(users), "--requests", str(len(texts)),
        "--extra-body", json.dumps(engine_fields(args)), "--output-jsonl", str(work / f"{tag}.records.jsonl"),
        "--output-json", str(work / f"{tag}.report.json"), "--progress", "none", "--metrics-address", "none",
        "--name", tag,
    ]  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)


def ours_results(work: Path, tag: str, skip: int = 0) -> dict[str, list[float]]:
    lines = (work / f"{tag}.records.jsonl").read_text().splitlines()
    records = sorted((json.loads(line) for line in lines), key=lambda r: r["sent_ns"])[skip:]
    ok = [r for r in records if r["outcome"] == "success"]
    return {"ttft": [r["ttft_s"] for r in ok], "tpot": [r["tpot_s"] for r in ok if r["tpot_s"] is not None]}


def reference(
    url: str, model: str, texts: list[str], users: int, args, work: Path, tag: str, start_at: float
):
    bodies = [
        {"model": model, "messages": [{"role": "user", "content": t}], "max_tokens": args.output_tokens,
         **engine_fields(args)}
        for t in texts
    ]  # fmt: skip
    (work / f"{tag}.bodies.json").write_text(json.dumps(bodies))
    argv = [sys.executable, "-m", "tests.support.reference_client", url, str(work / f"{tag}.bodies.json"),
            str(users), str(start_at), str(work / f"{tag}.out.json")]  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT)


def reference_results(work: Path, tag: str, skip: int = 0) -> dict[str, list[float]]:
    results = json.loads((work / f"{tag}.out.json").read_text())[skip:]  # started in body order
    tpot = [(r["e2e_s"] - r["ttft_s"]) / (r["tokens"] - 1) for r in results if r["tokens"] > 1]
    return {"ttft": [r["ttft_s"] for r in results], "tpot": tpot}


def engine_fields(args) -> dict:
    return {"ignore_eos": True} if args.idle_slot_cache else {"ignore_eos": True, "cache_prompt": False}


def one_round(number: int, url: str, model: str, args, work: Path) -> dict[str, dict]:
    rng = random.Random(args.seed + number)
    texts = [random_words(rng, rng.randint(*args.prompt_words)) for _ in range(args.requests)]
    out: dict[str, dict] = {}
    if args.mode == "alternating":
        for client in ("ours", "ref") if number % 2 == 0 else ("ref", "ours"):
            tag = f"r{number}-{client}"
            if client == "ours":
                ours(url, model, texts, args.users, args, work, tag).wait()
                out[client] = ours_results(work, tag)
            else:
                reference(url, model, texts, args.users, args, work, tag, time.monotonic()).wait()
                out[client] = reference_results(work, tag)
    else:
        half = len(texts) // 2
        mine, theirs = (texts[:half], texts[half:]) if number % 2 == 0 else (texts[half:], texts[:half])
        users = max(1, args.users // 2)
        ref = reference(url, model, theirs, users, args, work, f"r{number}-ref", time.monotonic() + 1.0)
        time.sleep(0.9)  # the reference sleeps until its start instant; ours spends ~0.1 s starting Python
        ours(url, model, mine, users, args, work, f"r{number}-ours").wait()
        ref.wait()
        out = {
            "ours": ours_results(work, f"r{number}-ours"),
            "ref": reference_results(work, f"r{number}-ref"),
        }
    return {
        client: {m: quantiles(v) for m, v in values.items()} | {"raw": values}
        for client, values in out.items()
    }


def _cells(client: str, result: dict) -> str:
    ttft, tpot = result["ttft"], result["tpot"]
    return (
        f"{client} TTFT p50 {ttft['p50'] * 1e3:7.1f} ms p90 {ttft['p90'] * 1e3:7.1f} "
        f"TPOT p50 {tpot['p50'] * 1e3:6.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--mode", choices=("alternating", "simultaneous"), default="alternating")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=400, help="per client and round")
    parser.add_argument("--output-tokens", type=int, default=50)
    parser.add_argument("--prompt-words", type=int, nargs=2, default=(64, 512), metavar=("MIN", "MAX"))
    parser.add_argument("--parallel", type=int, default=64, help="llama-server -np")
    parser.add_argument("--ctx", type=int, default=65536)
    parser.add_argument("--shape", choices=("QWEN3_4B", "TINY"), default="QWEN3_4B")
    parser.add_argument(
        "--idle-slot-cache", action="store_true", help="keep llama-server's --cache-idle-slots"
    )
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "ttft-reference.json")
    args = parser.parse_args()
    os.environ.setdefault("LLAMA_BUILD_SUFFIX", "-cuda" if args.shape == "QWEN3_4B" else "")
    extra = ["-ngl", "99"] if args.shape == "QWEN3_4B" else []
    extra += [] if args.idle_slot_cache else ["--no-cache-idle-slots"]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shape = getattr(llama, args.shape)
        with llama.llama_server(work, parallel=args.parallel, ctx_size=args.ctx, threads=os.cpu_count() or 2,
                                extra_args=extra, timeout=600, shape=shape) as server:  # fmt: skip
            for number in range(args.rounds):
                result = one_round(number, server.url, server.model, args, work)
                rounds.append(result)
                cells = [_cells(client, result[client]) for client in ("ours", "ref")]
                print(f"round {number}: " + " | ".join(cells), flush=True)
    summary = {}
    for client in ("ours", "ref"):
        medians = [r[client]["ttft"]["p50"] for r in rounds]
        pooled = [v for r in rounds for v in r[client]["raw"]["ttft"]]
        tpots = [v for r in rounds for v in r[client]["raw"]["tpot"]]
        summary[client] = {
            "ttft_p50": statistics.median(pooled),
            "tpot_p50": statistics.median(tpots),
            "ttft_round_p50_min": min(medians),
            "ttft_round_p50_max": max(medians),
        }
    ms = {client: {k: v * 1e3 for k, v in values.items()} for client, values in summary.items()}
    ours_ms, ref_ms = ms["ours"], ms["ref"]
    print(
        f"TTFT p50 over {args.rounds} rounds: ours {ours_ms['ttft_p50']:.1f} ms, reference "
        f"{ref_ms['ttft_p50']:.1f} ms, difference {ours_ms['ttft_p50'] - ref_ms['ttft_p50']:+.1f} ms; "
        f"round p50 spread: ours {ours_ms['ttft_round_p50_min']:.1f}-{ours_ms['ttft_round_p50_max']:.1f} ms, "
        f"reference {ref_ms['ttft_round_p50_min']:.1f}-{ref_ms['ttft_round_p50_max']:.1f} ms. "
        f"TPOT p50: ours {ours_ms['tpot_p50']:.2f} ms, reference {ref_ms['tpot_p50']:.2f} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for r in rounds:
        for client in r.values():
            client.pop("raw")
    document = {"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds, "summary": summary}
    args.out.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
