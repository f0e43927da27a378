"""Trace replay at 1,000 requests/s: how late does llmobs-loadgen send what a trace says, beside AIPerf.

    .venv/bin/python bench/trace_replay.py                 # 1,000 req/s for 20 s, then AIPerf alike
    .venv/bin/python bench/trace_replay.py --seconds 5     # shorter
    .venv/bin/python bench/trace_replay.py --no-peer       # ours only

A Mooncake trace is generated (Poisson arrivals at --rate, 1-8 blocks of 512 tokens per prompt drawn
from a pool of shared hash ids, 8 output tokens) and replayed against the fast mock
(tests/loadgen/scripted_server.py --fast: pre-rendered streams, no delays), so the client's own
scheduling is what is measured. Ours: `llmobs-loadgen run --dataset mooncake:TRACE`, its arrival error
(sent - due) from the JSON report, and the share of requests it completed. AIPerf (the peer whose
Mooncake replay this format comes from) runs the same trace with `--fixed-schedule` from its own venv
(.cache/aiperf-venv, `pip install aiperf==0.13.0`) against the same mock; its schedule lag is what it
reports, where it reports one. Prints a Markdown block for bench/RESULTS.md.
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

from bench.loadgen_bench import mock_server  # noqa: E402

CACHE = Path(os.environ.get("LLMOBS_CACHE") or ROOT / ".cache")
AIPERF = CACHE / "aiperf-venv" / "bin" / "aiperf"
TARGET_P99_S = 0.005


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_trace(path: Path, rate: float, seconds: float, seed: int = 1) -> int:
    rng = random.Random(seed)
    now, lines = 0.0, []
    while now < seconds:
        blocks = rng.randint(1, 8)
        shared = rng.randint(0, blocks - 1)  # full blocks from a small pool; the (partial) last one unique
        ids = [rng.randrange(64) for _ in range(shared)] + [
            10_000 + len(lines) * 8 + k for k in range(blocks - shared)
        ]
        length = 512 * (blocks - 1) + rng.randint(1, 512)
        lines.append(
            {"timestamp": round(now * 1000, 3), "input_length": length, "output_length": 8, "hash_ids": ids}
        )
        now += rng.expovariate(rate)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return len(lines)


def run_ours(url: str, trace: Path, workdir: Path) -> dict:
    report = workdir / "ours.json"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable, "-m", "loadgen", "--log-level", "warning", "run", "--url", url,
            "--model", "scripted", "--dataset", f"mooncake:{trace}", "--metrics-address", "none",
            "--progress", "none", "--output-json", str(report),
        ],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - started
    phase = json.loads(report.read_text())["phases"][0]
    arrival = phase["latency_s"]["dispatch"]
    return {
        "sent": phase["requests"]["sent"],
        "succeeded": phase["requests"]["succeeded"],
        "achieved_rps": phase["throughput"]["requests_per_s"],
        "p50_ms": arrival["median"] * 1e3,
        "p99_ms": arrival["p99"] * 1e3,
        "max_ms": arrival["max"] * 1e3,
        "wall_s": wall,
    }


HF_REPO = "llmobs/bench-tokenizer"


def local_tokenizer(workdir: Path) -> Path:
    """A byte-level BPE tokenizer in a Hugging Face cache under `workdir` (the Hub is out of reach here):
    AIPerf's worker processes load tokenizers only from the cache, by repo id (HF_HOME=workdir/hf)."""
    import tokenizers

    revision = "0" * 40
    repo = workdir / "hf" / "hub" / f"models--{HF_REPO.replace('/', '--')}"
    directory = repo / "snapshots" / revision
    directory.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=2000, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()
    )
    from loadgen.workloads import WORDS

    rng = random.Random(1)
    tokenizer.train_from_iterator((" ".join(rng.choices(WORDS, k=200)) for _ in range(500)), trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"})
    )
    return workdir / "hf"


def run_aiperf(url: str, trace: Path, workdir: Path) -> dict | str:
    if not AIPERF.exists():
        return (
            f"not installed ({AIPERF} missing: python3 -m venv .cache/aiperf-venv "
            "&& .cache/aiperf-venv/bin/pip install aiperf==0.13.0)"
        )
    artifacts = workdir / "aiperf"
    command = [
        str(AIPERF), "profile", "--model-names", "scripted", "--url", url, "--endpoint-type", "chat",
        "--streaming", "--input-file", str(trace), "--custom-dataset-type", "mooncake_trace",
        "--fixed-schedule", "--output-artifact-dir", str(artifacts), "--tokenizer", HF_REPO,
        "--ui-type", "none", "--no-server-metrics", "--no-gpu-telemetry",
    ]  # fmt: skip
    env = {**os.environ, "HF_HOME": str(local_tokenizer(workdir)), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        text = result.stderr + result.stdout
        logs = list(artifacts.rglob("aiperf.log"))
        if logs:
            text += logs[0].read_text(errors="replace")
        errors = [line.strip() for line in text.splitlines() if "error" in line.lower()][-4:]
        return f"failed (exit {result.returncode}): " + " | ".join(errors)[:600]
    exported = next(artifacts.rglob("profile_export_aiperf.json"), None)
    if exported is None:
        return "ran, but wrote no profile_export_aiperf.json"
    data = json.loads(exported.read_text())

    def figure(key: str) -> float | None:
        value = data.get(key)
        return value.get("avg") if isinstance(value, dict) else None

    # AIPerf's replay_sched_lag_*: send time minus the scheduled time, less the least-late request's
    # (aiperf/metrics/types/replay_sched_lag_metrics.py): a run-wide constant lateness does not show
    return {
        "requests": figure("request_count"),
        "achieved_rps": figure("request_throughput"),
        "p50_ms": figure("replay_sched_lag_p50"),
        "p99_ms": figure("replay_sched_lag_p99"),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trace-bench-") as tmp:
        workdir = Path(tmp)
        trace = workdir / "trace.jsonl"
        count = make_trace(trace, args.rate, args.seconds)
        log(f"trace: {count} requests over {args.seconds:g} s ({args.rate:g}/s Poisson)")
        with mock_server(workdir, "--fast", "--chunk-fields", "--no-records") as url:
            ours = run_ours(url, trace, workdir)
            log(f"ours: {ours}")
            peer = "not run (--no-peer)" if args.no_peer else run_aiperf(url, trace, workdir)
            log(f"aiperf: {peer}")
    verdict = "met" if ours["p99_ms"] < TARGET_P99_S * 1e3 else "NOT met"
    machine = f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs"
    row = (
        f"| llmobs-loadgen | {ours['sent']} / {ours['succeeded']} | {ours['achieved_rps']:.0f} | "
        f"{ours['p50_ms']:.2f} ms | {ours['p99_ms']:.2f} ms | {ours['max_ms']:.1f} ms |"
    )
    if isinstance(peer, dict):
        peer_row = (
            f"| AIPerf 0.13 `--fixed-schedule` | {peer['requests']:.0f} | {peer['achieved_rps'] or 0:.0f} | "
            f"{peer['p50_ms']:.2f} ms | {peer['p99_ms']:.2f} ms | - |"
        )
    else:
        peer_row = f"| AIPerf 0.13 `--fixed-schedule` | {peer} | | | | |"
    print(f"""
### Trace replay at {args.rate:g} requests/s ({machine})

`.venv/bin/python bench/trace_replay.py --rate {args.rate:g} --seconds {args.seconds:g}`: a Mooncake trace
of {count} requests (Poisson, {args.seconds:g} s) replayed against the fast mock on the same machine.

| client | sent / completed | achieved req/s | arrival error p50 | p99 | max |
| --- | --- | --- | --- | --- | --- |
{row}
{peer_row}

Target p99 under {TARGET_P99_S * 1e3:g} ms (ours): {verdict}. AIPerf's figures are its own
`replay_sched_lag_p50` and `_p99`: send time minus scheduled time, anchored at its least-late request
(a lateness common to every request does not show), and no max.
""")


if __name__ == "__main__":
    main()
