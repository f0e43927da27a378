"""Client capacity of llmobs-loadgen beside GuideLLM, Locust (FastHttpUser) and a vLLM-bench-style
aiohttp client, against the same fast mock server, in one run.

    .venv/bin/python bench/loadgen_bench.py            # full run, about 10 minutes
    .venv/bin/python bench/loadgen_bench.py --quick    # shorter phases

The mock (tests/loadgen/scripted_server.py --fast) runs in its own process and answers every chat
request with a pre-rendered stream (role chunk, 10 content events, usage, [DONE]) in one write, so the
client's CPU is what limits throughput. Peers live in their own venv (.cache/bench-venv), created here:
torch==2.13.0 first (GuideLLM needs it; pip takes the cached CPU build), then guidellm, locust,
aiohttp, tokenizers. GuideLLM runs offline with a local word-level tokenizer built with `tokenizers`.

Measured:
1. closed loop, 50 streams, same duration each: requests/s and SSE events/s completed, and the
   client's CPU seconds per 1,000 requests (RUSAGE_CHILDREN, start-up included);
2. open loop at constant rates up a ladder: the highest rate each tool sustains (>= 97 % of the
   rate completed, no failures) with its own dispatch-delay p99 under 5 ms (ours:
   loadgen dispatch delay; GuideLLM: root_dispatch_delay; vLLM-style: send time - schedule);
   Locust has no open-loop schedule or dispatch-delay figure, so it has no entry there;
3. 1,000 concurrent streams in one loadgen process against the scripted server with records: the
   error of measured TTFT, ITL and TPOT against the server's own send timestamps.
Prints a Markdown block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen.workloads import WORDS  # noqa: E402
from tests.support.procs import free_port, running  # noqa: E402

VENV = ROOT / ".cache" / "bench-venv"
PEER_PYTHON = VENV / "bin" / "python"
TOKENIZER_DIR = ROOT / ".cache" / "bench-tokenizer"
SERVER = ROOT / "tests" / "loadgen" / "scripted_server.py"
OUTPUT_LEN = 10
PROMPT_LEN = 32
DISPATCH_P99_LIMIT = 0.005


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_peer_venv() -> None:
    wanted = ("guidellm", "locust")
    if PEER_PYTHON.exists() and all((VENV / "bin" / name).exists() for name in wanted):
        return
    log(f"creating the peers' venv at {VENV}")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(PEER_PYTHON), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # first, so guidellm does not pull CUDA torch
    subprocess.run([*pip, "guidellm", "locust", "aiohttp", "tokenizers"], check=True)


def peer_version(package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([str(PEER_PYTHON), "-c", code], capture_output=True, text=True).stdout.strip()


def ensure_tokenizer() -> Path:
    """A word-level tokenizer.json + tokenizer_config.json (PreTrainedTokenizerFast) for GuideLLM."""
    words = TOKENIZER_DIR / "words.txt"  # the vocabulary it was built from: rebuilt when WORDS change
    vocabulary = "\n".join(WORDS)
    if (TOKENIZER_DIR / "tokenizer.json").exists() and words.exists() and words.read_text() == vocabulary:
        return TOKENIZER_DIR
    TOKENIZER_DIR.mkdir(parents=True, exist_ok=True)
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from loadgen.workloads import WORDS
vocab = {{"[UNK]": 0}}
for word in WORDS:
    vocab.setdefault(word, len(vocab))
tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
tokenizer.decoder = decoders.WordPiece(prefix="##")
tokenizer.save({str(TOKENIZER_DIR / "tokenizer.json")!r})
config = {{"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "model_max_length": 100000}}
json.dump(config, open({str(TOKENIZER_DIR / "tokenizer_config.json")!r}, "w"))
"""
    subprocess.run([str(PEER_PYTHON), "-c", code], check=True)
    words.write_text(vocabulary)
    return TOKENIZER_DIR


@contextlib.contextmanager
def mock_server(workdir: Path, *args: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(SERVER), "--port", str(port), *args]
    with running(argv, f"{url}/stats", workdir / f"mock-{port}.log"):
        yield url


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tool(argv: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    before = children_cpu()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return result, children_cpu() - before


def result_row(tool: str, ok: int, failed: int, events: int, duration: float, cpu: float, **extra) -> dict:
    return {
        "tool": tool, "ok": ok, "failed": failed, "duration_s": duration,
        "requests_per_s": ok / duration if duration else 0.0,
        "events_per_s": events / duration if duration else 0.0,
        "cpu_s_per_1000": 1000 * cpu / ok if ok else None, **extra,
    }  # fmt: skip


# -- the four clients ------------------------------------------------------------------------------


def ours(url: str, workdir: Path, duration: float, concurrency: int | None = None, rate: float | None = None):
    report_path = workdir / "ours.json"
    shape = (
        ["--concurrency", str(concurrency)] if concurrency else ["--rate", str(rate), "--arrival", "constant"]
    )
    argv = [
        sys.executable, "-m", "loadgen", "run", "--url", url, "--model", "m", *shape,
        "--step-duration", f"{duration}s", "--output-len", str(OUTPUT_LEN), "--input-len", str(PROMPT_LEN),
        "--metrics-address", "none", "--progress", "none", "--output-json", str(report_path),
    ]  # fmt: skip
    result, cpu = run_tool(argv, timeout=duration * 4 + 120)
    if result.returncode != 0:
        raise RuntimeError(f"loadgen failed: {result.stderr[-2000:]}")
    phase = json.loads(report_path.read_text())["phases"][0]
    requests = phase["requests"]
    return result_row(
        "llmobs-loadgen", requests["succeeded"], requests["failed"], phase["tokens"]["output"],
        phase["duration_s"], cpu, dispatch_p99=phase["latency_s"]["dispatch"]["p99"],
    )  # fmt: skip


def guidellm(
    url: str, workdir: Path, duration: float, concurrency: int | None = None, rate: float | None = None
):
    output = workdir / "guidellm.json"
    profile = f"kind=concurrent,streams={concurrency}" if concurrency else f"kind=constant,rate={rate}"
    argv = [
        str(VENV / "bin" / "guidellm"), "run",
        "--backend", f"kind=openai_http,target={url},model=m",
        "--profile", profile,
        "--constraint", f"kind=max_duration,seconds={duration:g}",
        "--data", f"kind=synthetic_text,prompt_tokens={PROMPT_LEN},output_tokens={OUTPUT_LEN}",
        "--tokenizer", f"kind=huggingface_auto,model={ensure_tokenizer()}",
        "--output", f"kind=json,path={output}",
        "--disable-console",
    ]  # fmt: skip
    result, cpu = run_tool(argv, timeout=duration * 4 + 300)
    if result.returncode != 0 or not output.exists():
        raise RuntimeError(f"guidellm failed: {result.stderr[-2000:]}")
    bench = json.loads(output.read_text())["benchmarks"][0]
    requests = bench["requests"]
    ok = len(requests["successful"])
    events = sum(r["output_metrics"].get("text_tokens") or 0 for r in requests["successful"])
    dispatch = bench["metrics"]["root_dispatch_delay"]["percentiles"]["p99"]
    return result_row(
        "GuideLLM", ok, len(requests["errored"]), events, bench["duration"], cpu, dispatch_p99=dispatch
    )


def locust(url: str, workdir: Path, duration: float, concurrency: int):
    prefix = workdir / "locust"
    argv = [
        str(VENV / "bin" / "locust"), "-f", str(ROOT / "bench" / "loadgen_locustfile.py"), "--headless",
        "-u", str(concurrency), "-r", str(concurrency), "-t", f"{int(duration)}s", "--host", url,
        "--csv", str(prefix), "--only-summary", "--stop-timeout", "10",
    ]  # fmt: skip
    result, cpu = run_tool(argv, timeout=duration * 4 + 120)
    with open(f"{prefix}_stats.csv") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    counted = re.search(r"LOADGEN_BENCH_EVENTS (\d+) (\d+)", result.stdout + result.stderr)
    ok = int(total["Request Count"]) - int(total["Failure Count"])
    # the listener also counts responses finished outside Locust's stats window: scale per response
    events = round(ok * int(counted.group(1)) / max(1, int(counted.group(2))))
    return result_row("Locust FastHttpUser", ok, int(total["Failure Count"]), events, duration, cpu)


def vllm_style(
    url: str, workdir: Path, duration: float, concurrency: int | None = None, rate: float | None = None
):
    shape = ["--concurrency", str(concurrency)] if concurrency else ["--rate", str(rate)]
    argv = [
        str(PEER_PYTHON), str(ROOT / "bench" / "loadgen_vllm_style.py"), "--url", url, *shape,
        "--duration", str(duration), "--output-len", str(OUTPUT_LEN),
    ]  # fmt: skip
    result, cpu = run_tool(argv, timeout=duration * 4 + 120)
    if result.returncode != 0:
        raise RuntimeError(f"vllm-style client failed: {result.stderr[-2000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return result_row(
        "vLLM-bench-style aiohttp", out["ok"], out["failed"], out["events"], out["duration"], cpu,
        dispatch_p99=out["dispatch_p99"],
    )  # fmt: skip


# -- the measurements ------------------------------------------------------------------------------


CLIENTS = {
    "llmobs-loadgen": ours,
    "GuideLLM": guidellm,
    "Locust FastHttpUser": locust,
    "vLLM-bench-style aiohttp": vllm_style,
}


def closed_loop(url: str, workdir: Path, duration: float, streams: int, rounds: int) -> list[dict]:
    """Every client in turn, `rounds` times (interleaved, so load from elsewhere hits all alike)."""
    rows = []
    for round_number in range(1, rounds + 1):
        for name, run in CLIENTS.items():
            log(f"closed loop, {streams} streams, round {round_number}: {name}")
            try:
                row = run(url, workdir, duration, concurrency=streams)
            except Exception as exc:
                row = {"tool": name, "error": str(exc)[-500:]}
            row["round"] = round_number
            rows.append(row)
            log(f"  {row}")
    return rows


def sustained(row: dict, rate: float) -> bool:
    return (
        row["failed"] == 0
        and row["requests_per_s"] >= 0.97 * rate
        and row["dispatch_p99"] is not None
        and row["dispatch_p99"] < DISPATCH_P99_LIMIT
    )


def rate_ladder(url: str, workdir: Path, duration: float, rates: list[float]) -> list[dict]:
    """Up the rates, every client at each rate in turn (so load from elsewhere hits all alike);
    a client leaves the ladder at the first rate it fails twice."""
    names = ("llmobs-loadgen", "GuideLLM", "vLLM-bench-style aiohttp")
    steps: dict[str, list[dict]] = {name: [] for name in names}
    climbing = list(names)
    for rate in rates:
        for name in list(climbing):
            row = None
            for attempt in (1, 2):  # the machine is shared: a rate fails only if it fails twice
                log(f"open loop {rate:g}/s, try {attempt}: {name}")
                try:
                    row = CLIENTS[name](url, workdir, duration, rate=rate)
                except Exception as exc:
                    row = {"rate": rate, "error": str(exc)[-300:], "sustained": False}
                    break
                row["rate"] = rate
                row["sustained"] = sustained(row, rate)
                row["tries"] = attempt
                log(f"  {row['requests_per_s']:.0f} req/s, dispatch p99 {row['dispatch_p99']}")
                if row["sustained"]:
                    break
            steps[name].append(row)
            if not row["sustained"]:
                climbing.remove(name)
        if not climbing:
            break
    return [
        {
            "tool": name,
            "highest_sustained_rate": max(
                (s["rate"] for s in steps[name] if s.get("sustained")), default=None
            ),
            "steps": steps[name],
        }
        for name in names
    ]


def timing_error_at(workdir: Path, streams: int) -> dict:
    """Our client at `streams` concurrent streams vs the scripted server's send timestamps."""
    jsonl = workdir / "streams.jsonl"
    mock = {"ttft_ms": 1500, "itl_ms": 400}
    with mock_server(workdir) as url:
        argv = [
            sys.executable, "-m", "loadgen", "run", "--url", url, "--model", "m",
            "--concurrency", str(streams), "--requests", str(streams), "--output-len", "8",
            "--input-len", "16", "--run-id", "streams",
            "--extra-body", json.dumps({"mock": mock}), "--metrics-address", "none", "--progress", "none",
            "--output-jsonl", str(jsonl), "--request-timeout", "120s",
        ]  # fmt: skip
        result, _ = run_tool(argv, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-2000:])
        truth = {r["id"]: r for r in httpx.get(f"{url}/records", timeout=60).json() if r["id"]}
    errors: dict[str, list[float]] = {"ttft": [], "itl": [], "tpot": []}
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for record in records:
        server = truth[record["request_id"]]
        sent_at = server["event_ns"]
        errors["ttft"].append(record["ttft_s"] - (sent_at[0] - record["sent_ns"]) * 1e-9)
        for i in range(1, len(sent_at)):
            errors["itl"].append(record["itl_s"][i - 1] - (sent_at[i] - sent_at[i - 1]) * 1e-9)
        true_tpot = (server["done_ns"] - sent_at[0]) * 1e-9 / (record["output_tokens"] - 1)
        errors["tpot"].append(record["tpot_s"] - true_tpot)

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(abs(v) for v in values)
        return ordered[max(0, int(len(ordered) * p) - 1)]

    return {
        "streams": streams,
        "requests": len(records),
        "succeeded": sum(r["outcome"] == "success" for r in records),
        **{f"{k}_p50_ms": pct(v, 0.5) * 1e3 for k, v in errors.items()},
        **{f"{k}_p99_ms": pct(v, 0.99) * 1e3 for k, v in errors.items()},
        **{f"{k}_max_ms": pct(v, 1.0) * 1e3 for k, v in errors.items()},
    }


def machine() -> str:
    with open("/proc/cpuinfo") as handle:
        model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def markdown(results: dict) -> str:
    versions = results["versions"]
    lines = [
        f"Machine: {results['machine']}; load average before / after: "
        f"{results['load_before']} / {results['load_after']} (other work shares the machine).",
        f"Command: `{results['command']}`; peers: GuideLLM {versions['guidellm']}, "
        f"Locust {versions['locust']}, aiohttp {versions['aiohttp']}.",
        "",
        f"Closed loop, {results['streams']} streams, {results['duration']:g} s per run, "
        f"{results['rounds']} interleaved rounds, 10 SSE content events per request:",
        "",
        "| client | requests/s (mean; per round) | SSE events/s (mean) | failed | client CPU s / 1,000 req "
        "| dispatch p99 ms (worst round) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tool in CLIENTS:
        rows = [r for r in results["closed_loop"] if r["tool"] == tool]
        good = [r for r in rows if "error" not in r]
        if not good:
            error = rows[0].get("error", "no result")[:200] if rows else "no result"
            lines.append(f"| {tool} | did not run: {error} | | | | |")
            continue
        rates = [r["requests_per_s"] for r in good]
        events = sum(r["events_per_s"] for r in good) / len(good)
        cpu = [r["cpu_s_per_1000"] for r in good if r["cpu_s_per_1000"]]
        per_round = ", ".join(f"{rate:.0f}" for rate in rates)
        # closed loop: from a user's previous response to its next send (Locust and the vLLM-style
        # client do not measure it)
        dispatch = [r["dispatch_p99"] for r in good if r.get("dispatch_p99") is not None]
        lines.append(
            f"| {tool} | {sum(rates) / len(rates):.0f} ({per_round}) | {events:.0f} | "
            f"{sum(r['failed'] for r in good)} | {sum(cpu) / len(cpu):.2f} | "
            + (f"{max(dispatch) * 1e3:.2f} |" if dispatch else "not measured |")
        )
    lines += [
        "",
        "Open loop, constant rate: highest rate sustained"
        " (>= 97 % completed, no failures, dispatch p99 < 5 ms):",
        "",
        "| client | highest sustained (req/s) | ladder: rate -> achieved req/s, dispatch p99 ms |",
        "| --- | ---: | --- |",
    ]
    for entry in results["rates"]:
        steps = ", ".join(
            f"{s['rate']:g} -> {s['requests_per_s']:.0f}, {s['dispatch_p99'] * 1e3:.1f}"
            if "error" not in s and s.get("dispatch_p99") is not None
            else f"{s['rate']:g} -> {s.get('error', 'no dispatch figure')[:80]}"
            for s in entry["steps"]
        )
        lines.append(f"| {entry['tool']} | {entry['highest_sustained_rate'] or '-'} | {steps} |")
    lines.append("| Locust FastHttpUser | n/a | no open-loop schedule and no dispatch-delay figure |")
    for accuracy in results["accuracy"]:
        lines += [
            "",
            f"{accuracy['streams']} concurrent streams in one loadgen process ({accuracy['succeeded']}/"
            f"{accuracy['requests']} succeeded), error against the server's send timestamps (ms):",
            "",
            "| figure | p50 | p99 | max |",
            "| --- | ---: | ---: | ---: |",
        ]
        for key in ("ttft", "itl", "tpot"):
            lines.append(
                f"| {key.upper()} | {accuracy[f'{key}_p50_ms']:.3f} | {accuracy[f'{key}_p99_ms']:.3f} "
                f"| {accuracy[f'{key}_max_ms']:.3f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases, fewer rates")
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / ".cache" / "bench-loadgen.json")
    args = parser.parse_args()
    duration = 5.0 if args.quick else 10.0
    rates = [50, 100, 200, 400, 800, 1200, 1600, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000]
    ensure_peer_venv()
    ensure_tokenizer()
    results: dict = {
        "machine": machine(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": " ".join(["bench/loadgen_bench.py", *sys.argv[1:]]),
        "versions": {p: peer_version(p) for p in ("guidellm", "locust", "aiohttp")},
        "streams": args.streams,
        "rounds": args.rounds,
        "duration": duration,
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with mock_server(workdir, "--fast", "--no-records") as url:
            results["closed_loop"] = closed_loop(url, workdir, duration, args.streams, args.rounds)
            results["rates"] = rate_ladder(url, workdir, 5.0 if args.quick else 8.0, rates)
        results["accuracy"] = [timing_error_at(workdir, 1000)]
    results["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.output.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
