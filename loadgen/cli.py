"""Command line: `llmobs-loadgen run ...` (one run, report at the end) and `llmobs-loadgen serve`
(control API + /metrics, runs started over HTTP). README.md has examples."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen import eventloop, merge, redact
from loadgen.capacity import command as capacity
from loadgen.credentials import read_secret
from loadgen.errors import LoadgenError, ScenarioError
from loadgen.html import cli as html
from loadgen.metrics import LoadgenCollector
from loadgen.progress import show_progress
from loadgen.report import render
from loadgen.scenario import Scenario
from loadgen.tokens import OUTPUT_TOKENS_FROM
from loadgen.urls import normalize
from loadgen.workers import make_run

if TYPE_CHECKING:
    from loadgen.api import Policy

log = logging.getLogger("loadgen")

EXAMPLES = """examples:
  llmobs-loadgen run --url http://127.0.0.1:8000 --concurrency 1,10,50 --step-duration 20s --output-len 50
  llmobs-loadgen run --url http://127.0.0.1:8000 --rate 5 --arrival gamma --burstiness 0.5 --requests 500
  llmobs-loadgen run --url http://127.0.0.1:8000 --sweep --concurrency 1,2,4,8,16,32,64 \\
      --step-duration 60s --slo 'ttft<=2s' --slo 'user_tps>=10'
  llmobs-loadgen run --url http://127.0.0.1:8000 --concurrency 50 --soak --output-jsonl requests.jsonl
  llmobs-loadgen run --scenario scenario.yaml --output-json report.json
  llmobs-loadgen run --url http://engine:8000 --concurrency 64 --shard 0/2 --run-id r1 --output-json r1-0.json
  llmobs-loadgen merge r1-0.json r1-1.json -o r1.json
  llmobs-loadgen capacity --model ./Qwen3-4B --gpu-memory 24GiB --engine-url http://127.0.0.1:8000
  LOADGEN_TOKEN=... llmobs-loadgen serve --listen-address 0.0.0.0:9841 --control-token-env LOADGEN_TOKEN
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmobs-loadgen",
        description="Load generator for OpenAI-compatible LLM servers, with live client-side histograms.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run one scenario and print the report", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None,
    )  # fmt: skip
    _run_flags(run)
    html.add_commands(commands)
    capacity.add_parser(commands)
    merge.add_parser(commands)
    serve = commands.add_parser(
        "serve", help="serve the control API (/runs) and /metrics; runs start over HTTP"
    )
    serve.add_argument(
        "--listen-address", default="127.0.0.1:9841",
        help="HOST:PORT (default 127.0.0.1:9841, this host only; 0.0.0.0:9841 for a Prometheus "
        "elsewhere, with a --control-token-*)",
    )  # fmt: skip
    serve.add_argument(
        "--api-key-env", metavar="VAR", help="API key that runs send (only to --allow-url servers)"
    )
    serve.add_argument("--api-key-file", metavar="FILE", help="the same, from a file")
    serve.add_argument(
        "--allow-url", action="append", metavar="URL",
        help="runs may only target this base URL or paths below it (repeatable; needed with an API key)",
    )  # fmt: skip
    serve.add_argument(
        "--dataset-dir", metavar="DIR", help="datasets and tokenizer files of runs must be in DIR"
    )
    _network_flags(serve)  # for every run: a caller of /runs cannot choose them
    for command in (run, serve):
        command.add_argument(
            "--control-token-env", metavar="VAR",
            help="require `Authorization: Bearer TOKEN` on /runs, TOKEN from this variable",
        )  # fmt: skip
        command.add_argument("--control-token-file", metavar="FILE", help="the same, from a file")
        command.add_argument(
            "--event-loop", choices=eventloop.KINDS, default="auto",
            help="uvloop (less CPU per request) or asyncio's own; auto: uvloop when installed (auto)",
        )  # fmt: skip
    return parser


def _run_flags(p: argparse.ArgumentParser) -> None:
    target = p.add_argument_group("target")
    target.add_argument("--scenario", metavar="FILE", help="YAML scenario; flags given here override it")
    target.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8000 (a trailing /v1 is fine)")
    target.add_argument("--model", help="model name (default: the first id from /v1/models)")
    target.add_argument("--endpoint", choices=("chat", "completions"), help="API (default chat)")
    target.add_argument(
        "--stream", action=argparse.BooleanOptionalAction, help="stream with SSE (default on)"
    )
    target.add_argument(
        "--continuous-usage", action=argparse.BooleanOptionalAction,
        help="ask for usage on every streamed event (stream_options.continuous_usage_stats; vLLM, "
        "SGLang), so each event's tokens are known (speculative decoding, stream intervals); default off",
    )  # fmt: skip
    target.add_argument(
        "--api-key-env", metavar="VAR", help="read the API key from this environment variable"
    )
    target.add_argument("--api-key-file", metavar="FILE", help="read the API key from this file")
    target.add_argument(
        "--extra-body", metavar="JSON", type=_json_object,
        help='fields merged into every request body, e.g. \'{"ignore_eos": true}\'',
    )  # fmt: skip
    _network_flags(target)
    target.add_argument(
        "--engine-metrics", metavar="URL|auto|none",
        help="the engine's /metrics, read each second for its queue (running, waiting, KV usage); auto: "
        "beside --url (auto)",
    )  # fmt: skip
    target.add_argument("--connect-timeout", metavar="DUR", help="TCP connect timeout (default 10s)")
    target.add_argument(
        "--read-timeout", metavar="DUR", help="longest silence inside a response (default 120s)"
    )
    target.add_argument("--request-timeout", metavar="DUR", help="whole request (default 900s)")

    shape = p.add_argument_group("load shape")
    shape.add_argument("--concurrency", metavar="N[,N...]", help="closed loop users; a list makes steps")
    shape.add_argument("--rate", metavar="R[,R...]", help="open loop requests/s; a list makes steps")
    shape.add_argument(
        "--arrival", choices=("constant", "poisson", "gamma"), help="open loop arrivals (poisson)"
    )
    shape.add_argument("--burstiness", type=float, help="gamma shape: 1 = Poisson, <1 burstier (default 1)")
    shape.add_argument(
        "--max-concurrency", type=int, metavar="N", help="cap on in-flight requests (open loop)"
    )
    shape.add_argument(
        "--max-connections", type=int, metavar="N",
        help="HTTP connections at most (default: the peak concurrency; open loop: --max-concurrency, "
        "else 1000); requests beyond wait for one, which counts as dispatch delay",
    )  # fmt: skip
    shape.add_argument("--ramp-to", type=float, metavar="X", help="ramp the concurrency/rate linearly to X")
    shape.add_argument("--step-duration", "--duration", dest="step_duration", metavar="DUR",
                       help="length of each step/phase: 500ms, 20s, 5m, 2h, inf (default 60s)")  # fmt: skip
    shape.add_argument(
        "--requests", type=int, metavar="N",
        help="requests per step (ends the step early); with --turns, conversations per step",
    )  # fmt: skip
    shape.add_argument(
        "--think-time", metavar="DIST",
        help="a user's pause after an answer, before its next turn (--turns) or, closed loop, its next "
        "request: 2s, uniform:1s:5s (Locust's between(1, 5)), exponential:2s (none)",
    )  # fmt: skip
    shape.add_argument("--soak", action="store_true", default=None, help="run until stopped (or --duration)")
    shape.add_argument("--sweep", action="store_true", default=None,
                       help="find capacity: step through the levels until the SLOs fail")  # fmt: skip
    shape.add_argument(
        "--slo",
        action="append",
        metavar="SLO",
        help="ttft<=2s, ttfo<=, tpot<=100ms, itl<=, e2e<=30s, user_tps>=10 (tokens/s a user receives, "
        "from sending), stream_tps>=10 (after the first token), error_ratio<=0.01",
    )
    shape.add_argument("--slo-percentile", type=float, metavar="P", help="percentile SLOs are judged at (95)")
    shape.add_argument(
        "--max-error-ratio", type=float, metavar="R",
        help="exit 1 when more than this fraction of requests failed, e.g. 0.01 (default: only when "
        "every request failed)",
    )  # fmt: skip
    shape.add_argument("--grace", metavar="DUR", help="on stop, time in-flight requests get (default 10s)")
    shape.add_argument(
        "--honor-retry-after", action="store_true", default=None,
        help="closed loop: a user throttled (429, 503) waits as its Retry-After asks before its next "
        "request; open loop: throttled requests are only counted, the schedule is kept",
    )  # fmt: skip

    work = p.add_argument_group("workload")
    work.add_argument(
        "--input-len", metavar="DIST", help="prompt tokens: N, uniform:A:B, normal:M:S, hist:L=W,..."
    )
    work.add_argument(
        "--output-len", metavar="DIST",
        help="max_tokens, same forms (synthetic: 128; datasets: their own lengths unless given)",
    )  # fmt: skip
    work.add_argument(
        "--dataset", metavar="KIND:PATH",
        help="sharegpt:FILE.json, jsonl:FILE.jsonl, or a trace replayed at its own timing: "
        "mooncake:FILE.jsonl (timestamp, input_length, output_length, hash_ids) or trace:FILE.jsonl",
    )  # fmt: skip
    work.add_argument(
        "--time-scale",
        type=float,
        metavar="S",
        help="trace replay: multiply the trace's gaps (0.5 = twice as fast)",
    )
    work.add_argument("--prefix-groups", type=int, metavar="N", help="shared-prefix groups (prefix caching)")
    work.add_argument("--prefix-len", type=int, metavar="TOKENS", help="length of each shared prefix")
    work.add_argument("--turns", type=int, metavar="N", help="turns per conversation (multi-turn)")
    work.add_argument(
        "--prefix-hit-rate", type=float, metavar="R",
        help="size a system prompt shared by every conversation so the engine's prefix cache hits this "
        "share of prompt tokens (0-1); the report sets the engine's own counters beside it",
    )  # fmt: skip
    work.add_argument(
        "--warmup", metavar="N|DUR", help="send N requests (or for DUR) first, left out of every figure"
    )
    work.add_argument("--tokenizer", metavar="PATH", help="tokenizer.json (or its dir) or tiktoken:NAME")
    work.add_argument("--seed", type=int, help="random seed (default 0)")
    work.add_argument(
        "--output-tokens-from", choices=OUTPUT_TOKENS_FROM,
        help="output tokens of a stream: the server's usage, or counted token events; auto: usage "
        "unless it disagrees with the events (fewer tokens than events, or more than 16 per event)",
    )  # fmt: skip

    out = p.add_argument_group("output")
    out.add_argument("--name", help="scenario name (metric label; default 'default')")
    out.add_argument("--run-id", help="run id (metric label; default random)")
    out.add_argument("--output-json", metavar="FILE", help="write the full report as JSON")
    out.add_argument("--output-jsonl", metavar="FILE", help="write one JSON line per request, as they finish")
    out.add_argument("--output-html", metavar="FILE", help="write an HTML report (needs llmobs[html])")
    html.add_prometheus_flags(out)
    out.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve /metrics and /runs here during the run (default 127.0.0.1:9841, this host only; "
        "0.0.0.0:9841 for a Prometheus elsewhere: /runs there needs a --control-token-*; 'none' = off)",
    )
    out.add_argument("--progress", choices=("auto", "tty", "plain", "none"), help="live progress (auto)")
    out.add_argument(
        "--metrics-linger", metavar="DUR",
        help="after the run, keep serving /metrics this long (e.g. twice the scrape interval), so that "
        "Prometheus scrapes the final counts; a signal ends it (default 0)",
    )  # fmt: skip

    scale = p.add_argument_group("scale out (README: Scale out)")
    scale.add_argument(
        "--workers", metavar="N|auto",
        help="processes on this host sharing the run (one core each; auto: the usable cores; default 1)",
    )  # fmt: skip
    scale.add_argument(
        "--shard", metavar="I/N",
        help="this host's slice I (from 0) of a run over N hosts; auto/N takes I from JOB_COMPLETION_INDEX "
        "(a Kubernetes Indexed Job); needs --run-id, the same on every shard",
    )  # fmt: skip
    scale.add_argument(
        "--start-at", metavar="TIME",
        help="start the first phase at this wall-clock time (RFC 3339 with a zone, or Unix seconds), "
        "so that shards start together",
    )  # fmt: skip


def _network_flags(group: argparse._ActionsContainer) -> None:
    group.add_argument("--ca-file", metavar="FILE", help="verify HTTPS servers against this PEM CA bundle")
    group.add_argument(
        "--insecure", action="store_true", default=None,
        help="do not verify HTTPS certificates (anyone on the path can then read the API key)",
    )  # fmt: skip
    group.add_argument(
        "--proxy-from-env", action="store_true", default=None,
        help="send through the proxy HTTP_PROXY/HTTPS_PROXY/ALL_PROXY name (NO_PROXY honoured); "
        "off by default, and then the run is timed without kernel timestamps",
    )  # fmt: skip


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        # on a terminal a log line first clears the live progress line, which is redrawn after it
        format=("\r\x1b[2K" if sys.stderr.isatty() else "")
        + "%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redact.LogScrubber.install()  # every log line, whoever writes it, without a registered secret
    try:
        if args.command == "capacity":
            return capacity.run(args)
        if args.command == "merge":
            return merge.run(args)
        if args.command in html.COMMANDS:
            return html.run_command(args)
        token = read_secret(args.control_token_env, args.control_token_file, "control token")
        if args.command == "serve":
            return eventloop.run(_serve(args.listen_address, _serve_policy(args, token)), args.event_loop)
        not_scenario = ("command", "log_level", "scenario", "event_loop", "control_token_env",
                        "control_token_file", "output_html", *html.PROMETHEUS_FLAGS)  # fmt: skip
        flags = {k: v for k, v in vars(args).items() if k not in not_scenario}
        file_values = Scenario.load_yaml(args.scenario) if args.scenario else None
        scenario = Scenario.build(file_values, flags)
        output = html.html_output(args)
        with html.records_for(scenario, output) as scenario:
            return eventloop.run(_run(scenario, token, output, args.event_loop), args.event_loop)
    except LoadgenError as exc:
        print(redact.scrub(f"llmobs-loadgen: {exc}"), file=sys.stderr)
        return 2


def _serve_policy(args: argparse.Namespace, token: str | None) -> Policy:
    """What `serve`'s control API accepts, checked before anything starts."""
    from loadgen.api import Policy, exposure

    unsafe = exposure(args.listen_address, token, can_start=True)
    if unsafe:
        raise ScenarioError(unsafe)
    has_key = read_secret(args.api_key_env, args.api_key_file, "API key") is not None
    allowed = tuple(normalize(url, "--allow-url") for url in args.allow_url or ())
    for url in allowed:
        redact.register_url(url)
    if has_key and not allowed:
        raise ScenarioError(
            "--api-key-env/--api-key-file need --allow-url URL: the key is sent only to the servers named"
        )
    directory = None
    if args.dataset_dir:
        directory = Path(args.dataset_dir)
        if not directory.is_dir():
            raise ScenarioError(f"--dataset-dir {args.dataset_dir} is not a directory")
    return Policy(
        token=token, api_key_env=args.api_key_env, api_key_file=args.api_key_file,
        allowed_urls=allowed, dataset_dir=directory,
        network={"ca_file": args.ca_file, "insecure": args.insecure, "proxy_from_env": args.proxy_from_env},
    )  # fmt: skip


async def _run(
    scenario: Scenario,
    token: str | None = None,
    output_html: html.HtmlOutput | None = None,
    event_loop: str = "auto",
) -> int:
    log.info("event loop: %s", eventloop.running_kind())
    collector = LoadgenCollector()
    run = make_run(scenario, collector, event_loop)
    server = None
    if scenario.metrics_address and scenario.metrics_address.lower() != "none":
        from loadgen.api import HttpServer, Policy, RunManager, create_app, exposure  # FastAPI: only here

        unsafe = exposure(scenario.metrics_address, token, can_start=False)
        manager = RunManager(collector, policy=Policy(token=token, can_start=False, control=not unsafe))
        manager.adopt(run)
        server = HttpServer(create_app(collector, manager), scenario.metrics_address)
        server.start()
        log.info("serving /metrics and /runs on port %d", server.port)
        if unsafe:
            log.info("%s", unsafe)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    done = asyncio.Event()  # a signal after the run ends the --metrics-linger

    def stop() -> None:
        done.set() if run.state in ("finished", "failed") else run.stop()

    for sig in signals:
        loop.add_signal_handler(sig, _escalating(stop, run.force))
    progress = asyncio.create_task(show_progress(run.progress_line, scenario.progress))
    try:
        report = await run.execute()
        progress.cancel()
        print(render(report), flush=True)
        if server is not None and scenario.metrics_linger_s:
            log.info("run over: /metrics stays up %gs (--metrics-linger) for the last scrapes",
                     scenario.metrics_linger_s)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), scenario.metrics_linger_s)
    finally:
        progress.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)
        if server is not None:
            await server.close()
    if output_html and not html.write_run_report(report, scenario.output_jsonl, output_html):
        return 1
    if run.stopping:
        return 130
    if report.get("failure"):
        print(f"llmobs-loadgen: run failed: {report['failure']}", file=sys.stderr)
        return 1
    return 0


def _escalating(stop: Callable[[], None], force: Callable[[], None]) -> Callable[[], None]:
    """A signal handler: the first SIGINT/SIGTERM stops cleanly (grace period, report), the second
    cancels in-flight requests at once (report still written), the third exits on the spot."""
    count = 0

    def handle() -> None:
        nonlocal count
        count += 1
        if count == 1:
            stop()
        elif count == 2:
            log.warning("second signal: cancelling in-flight requests now (once more exits at once)")
            force()
        else:
            sys.stderr.write("llmobs-loadgen: third signal: exiting without a report\n")
            sys.stderr.flush()
            os._exit(130)

    return handle


async def _serve(address: str, policy: Policy) -> int:
    from loadgen.api import HttpServer, RunManager, create_app

    collector = LoadgenCollector()
    manager = RunManager(collector, policy=policy)
    server = HttpServer(create_app(collector, manager), address)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _escalating(done.set, manager.force_all))
    server.start()
    log.info("control API and /metrics on port %d", server.port)
    await done.wait()
    log.info("shutting down: stopping active runs")
    await manager.stop_all()
    await server.close()
    return 0
