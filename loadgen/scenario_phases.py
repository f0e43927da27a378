"""A scenario's phases from its values: levels (`--concurrency 1,4,16` or `--rate`), `steps:` with their
own durations, a ramp, or a trace replay's one phase; each phase checked (schedules.Phase.validate),
and the run's shape named for the metrics (closed, open-steps, sweep, replay, ...)."""

from __future__ import annotations

import math

from loadgen import scenario_values as read
from loadgen.errors import ScenarioError
from loadgen.scenario_values import Values, parse_duration
from loadgen.schedules import ARRIVALS, Phase, step_phases

__all__ = ["check_slices", "phases", "replay_phase", "shape"]

DEFAULT_STEP_S = 60.0
STEP_KEYS = {"concurrency", "rate", "duration", "requests", "ramp_to", "name"}


def phases(v: Values, max_concurrency: int | None, requests: int | None, soak: bool) -> tuple[Phase, ...]:
    """The phases of a closed or open loop: one per level or per `steps:` entry."""
    common: dict[str, object] = {
        "arrival": read.choice(v, "arrival", ARRIVALS),
        "burstiness": read.number(v, "burstiness"),
        "max_concurrency": max_concurrency,
        "max_requests": requests,
    }
    if v["step_duration"] is not None:
        duration = parse_duration(v["step_duration"])
    else:
        duration = math.inf if soak or requests else DEFAULT_STEP_S
    steps = v["steps"]
    if steps:
        if not isinstance(steps, list):
            raise ScenarioError("steps must be a list of mappings with concurrency or rate")
        result = tuple(_step(index, step, common, duration) for index, step in enumerate(steps, 1))
    else:
        concurrency = _levels(v["concurrency"], "concurrency", integer=True)
        rate = _levels(v["rate"], "rate", integer=False)
        if concurrency and rate:
            raise ScenarioError("give --concurrency (closed loop) or --rate (open loop), not both")
        levels, closed = (concurrency, True) if concurrency else (rate, False) if rate else ([1.0], True)
        if v["ramp_to"] is not None:
            if len(levels) != 1:
                raise ScenarioError("--ramp-to ramps from one starting --concurrency or --rate")
            common["ramp_to"] = read.number(v, "ramp_to")
        result = step_phases(levels, closed, duration_s=duration, **common)
    for phase in result:
        _validate(phase)
    if not soak and any(math.isinf(p.duration_s) and p.max_requests is None for p in result):
        raise ScenarioError("a phase without an end: give --step-duration or --requests, or --soak")
    return result


def replay_phase(v: Values, requests: int | None) -> tuple[Phase, ...]:
    """A trace replay: one open-loop phase timed by the trace (to its end, --requests or --step-duration)."""
    given = [key for key in ("concurrency", "rate", "steps", "ramp_to") if v[key] is not None]
    if given or v["sweep"]:
        raise ScenarioError(
            "a trace replay (--dataset mooncake:/trace:) has the trace's timing; drop "
            + (", ".join(given) or "sweep")
        )
    duration = parse_duration(v["step_duration"]) if v["step_duration"] is not None else math.inf
    phase = Phase(name="replay", replay=True, duration_s=duration, max_requests=requests)
    _validate(phase)
    return (phase,)


def check_slices(phases: tuple[Phase, ...], slices: int) -> None:
    """Each shard and worker gets its part of an open loop's --max-concurrency: at least one each."""
    for phase in phases:
        if phase.max_concurrency is not None and phase.max_concurrency < slices:
            raise ScenarioError(
                f"max_concurrency {phase.max_concurrency} is split among {slices} shards x workers: "
                "give at least one each"
            )


def shape(phases: tuple[Phase, ...], sweep: bool, soak: bool) -> str:
    """closed, open, closed-steps, open-steps, closed-ramp, open-ramp, sweep, soak or replay."""
    if sweep:
        return "sweep"
    if soak:
        return "soak"
    if phases[0].replay:
        return "replay"
    kind = "closed" if phases[0].closed else "open"
    if phases[0].ramp_to is not None:
        return f"{kind}-ramp"
    return f"{kind}-steps" if len(phases) > 1 else kind


def _validate(phase: Phase) -> None:
    try:
        phase.validate()
    except ValueError as exc:
        raise ScenarioError(str(exc)) from exc


def _step(index: int, step: object, common: dict, duration: float) -> Phase:
    if not isinstance(step, dict) or not ({"concurrency", "rate"} & set(step)):
        raise ScenarioError(f"steps[{index}] must be a mapping with concurrency or rate")
    unknown = set(step) - STEP_KEYS
    if unknown:
        raise ScenarioError(f"steps[{index}]: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    kind = "concurrency" if "concurrency" in step else "rate"
    try:
        level = int(step[kind]) if kind == "concurrency" else float(step[kind])
        ramp_to = float(step["ramp_to"]) if step.get("ramp_to") is not None else None
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"steps[{index}]: {kind} and ramp_to must be numbers") from exc
    requests = step.get("requests", common["max_requests"])
    if requests is not None and (not isinstance(requests, int) or isinstance(requests, bool)):
        raise ScenarioError(f"steps[{index}]: requests must be a whole number")
    return Phase(
        name=str(step.get("name") or f"step-{index} {kind}={level:g}"),
        **{kind: level},
        ramp_to=ramp_to,
        duration_s=parse_duration(step["duration"]) if "duration" in step else duration,
        **{**common, "max_requests": requests},
    )


def _levels(value: object, what: str, integer: bool) -> list[float] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        levels = [float(str(item).strip()) for item in items if str(item).strip()]
    except ValueError as exc:
        raise ScenarioError(f"bad {what} {value!r}: use a number or a comma-separated list") from exc
    if (
        not levels
        or not all(0 < level < math.inf for level in levels)
        or (integer and any(level != int(level) for level in levels))
    ):
        raise ScenarioError(f"bad {what} {value!r}: {'whole ' if integer else ''}numbers above 0 needed")
    return levels
