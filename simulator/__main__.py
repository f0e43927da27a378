"""`python -m simulator` / `llmobs-simulator`: a vLLM-compatible engine simulator."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from simulator.errors import FlagError, SimulatorError
from simulator.faults import Faults, load_faults, parse_error_rate, parse_pair
from simulator.profile import Profile, ProfileError, available_profiles, load_profile
from simulator.sends import SendLog

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
    streaming = parser.add_argument_group("tokens per event and reasoning (override the profile)")
    streaming.add_argument(
        "--speculative-tokens",
        type=int,
        metavar="K",
        help="speculative decoding (vLLM's --speculative-config num_speculative_tokens): each decode step "
        "emits 1 + the accepted drafts in one event",
    )
    streaming.add_argument(
        "--acceptance-rate", type=float, metavar="P", help="chance that each draft position is accepted"
    )
    streaming.add_argument(
        "--stream-interval", type=int, metavar="N", help="vLLM's --stream-interval: N tokens per event"
    )
    streaming.add_argument(
        "--reasoning-tokens",
        metavar="MIN:MAX",
        help="a reasoning model: each answer starts with MIN to MAX reasoning tokens (0:0 = off)",
    )
    streaming.add_argument(
        "--reasoning-field",
        choices=["reasoning", "reasoning_content"],
        help="the delta field of reasoning text (vLLM >= 0.12: reasoning)",
    )
    parser.add_argument(
        "--record-sends",
        type=int,
        metavar="N",
        help="keep when each SSE event of the last N requests was sent (GET /_simulator/sends; for tests)",
    )
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


def profile_from_args(args: argparse.Namespace) -> Profile:
    profile = load_profile(args.profile)
    if args.time_scale is not None:
        profile = profile.with_time_scale(args.time_scale)
    changes: dict[str, dict] = {"speculative": {}, "scheduler": {}, "reasoning": {}}
    if args.speculative_tokens is not None:
        changes["speculative"]["num_speculative_tokens"] = args.speculative_tokens
    if args.acceptance_rate is not None:
        changes["speculative"]["acceptance_rate"] = args.acceptance_rate
    if args.stream_interval is not None:
        changes["scheduler"]["stream_interval"] = args.stream_interval
    if args.reasoning_tokens is not None:
        low, _, high = args.reasoning_tokens.partition(":")
        try:
            changes["reasoning"].update(min_tokens=int(low), max_tokens=int(high or low))
        except ValueError:
            raise ProfileError(f"--reasoning-tokens {args.reasoning_tokens!r}: use MIN:MAX") from None
    if args.reasoning_field is not None:
        changes["reasoning"]["field"] = args.reasoning_field
    return profile.with_changes("flags", **{name: fields for name, fields in changes.items() if fields})


def api_key_from_args(args: argparse.Namespace) -> str | None:
    if not args.api_key_env:
        return None
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        raise FlagError(f"--api-key-env {args.api_key_env}: that variable is empty")
    return api_key


def check_flags(args: argparse.Namespace) -> None:
    if not 1 <= args.data_parallel_size <= 64:
        raise FlagError("--data-parallel-size must be between 1 and 64")
    if not 0 < args.port < 65536:
        raise FlagError(f"--port {args.port} is not a TCP port")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        profile = profile_from_args(args)
        faults = faults_from_args(args)
        api_key = api_key_from_args(args)
        check_flags(args)
        sends = SendLog(args.record_sends) if args.record_sends is not None else None
    except SimulatorError as exc:
        print(f"llmobs-simulator: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from simulator.engine import Engine
    from simulator.server import Simulator, create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    model = args.model or profile.model
    engines = [Engine(profile, faults, seed=args.seed + index) for index in range(args.data_parallel_size)]
    sim = Simulator(engines, model, faults, seed=args.seed, sends=sends)
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
