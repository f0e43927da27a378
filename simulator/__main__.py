"""`python -m simulator` / `llmobs-simulator`: a vLLM-compatible engine simulator."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from simulator.faults import FaultConfigError, Faults, load_faults, parse_error_rate, parse_pair
from simulator.profile import ProfileError, available_profiles, load_profile

DEFAULT_PROFILE = "rtx4090d-qwen3-4b-fp8"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmobs-simulator",
        description="Simulate a vLLM 0.33 server: OpenAI API, continuous batching over a KV cache, "
        "and vLLM's exact /metrics. No GPU needed.",
    )
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"shipped profile name ({', '.join(available_profiles())}) or a profile YAML file "
        f"(default {DEFAULT_PROFILE})",
    )
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="listen port (default 8000, like vLLM)")
    parser.add_argument("--model", help="served model name (default: the profile's model)")
    parser.add_argument(
        "--data-parallel-size",
        type=int,
        default=1,
        metavar="N",
        help="N engines behind one API, each with the profile's GPU (vLLM's -dp); engine label 0..N-1",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for generated text, lengths and faults")
    parser.add_argument(
        "--time-scale", type=float, help="multiply every simulated duration (2 = twice as slow)"
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require `Authorization: Bearer <value of VAR>` on /v1 paths, like vLLM's --api-key",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    faults = parser.add_argument_group("fault injection (a --faults file, then flags on top of it)")
    faults.add_argument("--faults", metavar="FILE", help="YAML fault settings (see simulator/README.md)")
    faults.add_argument(
        "--error-rate",
        action="append",
        default=[],
        metavar="STATUS=P",
        help="answer this share of requests with this HTTP status, e.g. 500=0.01 (repeatable)",
    )
    faults.add_argument(
        "--latency-spike",
        metavar="PER_MINUTE:SECONDS",
        help="engine steps that take SECONDS longer, PER_MINUTE times a minute on average",
    )
    faults.add_argument("--stall", metavar="P:SECONDS", help="share P of streams pause SECONDS half-way")
    faults.add_argument(
        "--drop", type=float, metavar="P", help="share P of responses lose their connection half-way"
    )
    faults.add_argument(
        "--restart-every", type=float, metavar="SECONDS", help="restart the engine periodically"
    )
    faults.add_argument(
        "--restart-down", type=float, metavar="SECONDS", help="how long a restart lasts (default 2)"
    )
    return parser


def faults_from_args(args: argparse.Namespace) -> Faults:
    faults = load_faults(args.faults) if args.faults else Faults()
    changes: dict = {}
    if args.error_rate:
        changes["error_rates"] = {
            **faults.error_rates,
            **dict(parse_error_rate(item) for item in args.error_rate),
        }
    if args.latency_spike:
        changes["spike_per_minute"], changes["spike_seconds"] = parse_pair(
            "--latency-spike", args.latency_spike
        )
    if args.stall:
        changes["stall_probability"], changes["stall_seconds"] = parse_pair("--stall", args.stall)
    if args.drop is not None:
        changes["drop_probability"] = args.drop
    if args.restart_every is not None:
        changes["restart_every_seconds"] = args.restart_every
    if args.restart_down is not None:
        changes["restart_down_seconds"] = args.restart_down
    return dataclasses.replace(faults, **changes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        profile = load_profile(args.profile)
        if args.time_scale is not None:
            profile = profile.with_time_scale(args.time_scale)
        faults = faults_from_args(args)
    except (ProfileError, FaultConfigError) as exc:
        print(f"llmobs-simulator: {exc}", file=sys.stderr)
        return 2
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(
                f"llmobs-simulator: --api-key-env {args.api_key_env}: that variable is empty", file=sys.stderr
            )
            return 2
    if not 1 <= args.data_parallel_size <= 64:
        print("llmobs-simulator: --data-parallel-size must be between 1 and 64", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"llmobs-simulator: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2

    import uvicorn

    from simulator.engine import Engine
    from simulator.server import Simulator, create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    model = args.model or profile.model
    engines = [Engine(profile, faults, seed=args.seed + index) for index in range(args.data_parallel_size)]
    sim = Simulator(engines, model, faults, seed=args.seed)
    print(
        f"llmobs-simulator: {model} on profile {profile.name} ({profile.kv_capacity_tokens} KV tokens, "
        f"max {profile.scheduler.max_num_seqs} seqs), listening on http://{args.host}:{args.port}"
        + (f", faults: {faults}" if faults.any else ""),
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        create_app(sim, api_key),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
