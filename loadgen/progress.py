"""The live progress line: where the run is (step k of N, the step's and the run's time left), what the
step does (sent, answered, failed, in flight, rates, TTFT), and whether an open loop is overloaded;
redrawn on a terminal, a log line every 10 s otherwise.

    step 2/5 16 users | 12.3 of 20.0 s | run 1m12s of ~2m40s, ETA 1m28s | sent 120 ok 118 failed 0 |
    in flight 16 | 9.8 req/s 480 tok/s | TTFT p50 120 ms

Times left are planned: a step ends at its duration or its request budget (estimated from the rate so
far), a sweep may stop before its last level (then "~" means "at most").
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from time import perf_counter_ns
from typing import IO, Any

from loadgen import redact

__all__ = ["line", "show_progress"]


async def show_progress(
    line_of: Callable[[], str], mode: str, stream: IO[str] = sys.stderr, interval: float | None = None
) -> None:
    """Write `line_of()` until cancelled: a live line for people at a terminal (every 0.5 s), plain
    timestamped lines otherwise (every 10 s); `mode` is --progress (auto, tty, plain, none)."""
    if mode == "none":
        return
    tty = mode == "tty" or (mode == "auto" and stream.isatty())
    interval = interval or (0.5 if tty else 10.0)
    write: Callable[[str], object] = stream.write
    try:
        while True:
            await asyncio.sleep(interval)
            line = redact.scrub(line_of())
            write(f"\r\x1b[2K{line}" if tty else f"{time.strftime('%H:%M:%S')} {line}\n")
            stream.flush()
    except asyncio.CancelledError:
        if tty:
            write("\n")
        raise


def line(run: Any) -> str:
    """The line for a Run (duck-typed: current, phases, phase_index, stats, metrics, detector)."""
    stats = run.current
    if stats is None:
        return f"run {run.run_id}: {run.state}"
    phase = run.phases[run.phase_index - 1] if 0 < run.phase_index <= len(run.phases) else None
    elapsed = (perf_counter_ns() - stats.start_ns) * 1e-9
    ok = stats.outcomes["success"]
    rate = ok / elapsed if elapsed > 0 else 0.0
    parts = [_where(run, phase), _times(run, phase, stats, elapsed, rate)]
    parts.append(f"sent {stats.sent} ok {ok} failed {stats.failed}")
    parts.append(f"in flight {run.metrics.in_flight}")
    parts.append(f"{rate:.1f} req/s {stats.output_tokens / elapsed if elapsed > 0 else 0:.0f} tok/s")
    ttft = stats.dist["ttft"].percentile(50)
    if ttft is not None:
        parts.append(f"TTFT p50 {ttft * 1000:,.0f} ms")
    overload = run.detector.overload if run.detector is not None else None
    if overload is not None:
        parts.append(
            f"OVERLOADED since {overload.since_s:.0f} s: {overload.achieved_rate:.1f} of "
            f"{overload.offered_rate:.1f} req/s answered, backlog {overload.in_flight_now}"
        )
    return " | ".join(parts)


def _where(run: Any, phase: Any) -> str:
    if phase is None:
        return run.current.name
    level = f"{phase.level:g} users" if phase.closed else f"{phase.level:g} req/s"
    if phase.ramp_to is not None:
        level += f" -> {phase.ramp_to:g}"
    return f"step {run.phase_index}/{len(run.phases)} {level}"


def _times(run: Any, phase: Any, stats: Any, elapsed: float, rate: float) -> str:
    step_left = _step_left(phase, stats, elapsed, rate) if phase is not None else math.inf
    if phase is None or not math.isfinite(step_left):
        return f"{_clock(elapsed)} elapsed"
    step_total = elapsed + step_left
    later = [_planned(p) for p in run.phases[run.phase_index :]]
    done = sum(s.duration_s for s in run.stats)
    if not all(math.isfinite(t) for t in later):
        return f"{_clock(elapsed)} of {_clock(step_total)}"
    run_left = step_left + sum(later)
    approx = "~" if getattr(run.scenario, "sweep", False) or phase.max_requests is not None else ""
    return (
        f"{_clock(elapsed)} of {_clock(step_total)} | run {_clock(done + elapsed)} of "
        f"{approx}{_clock(done + elapsed + run_left)}, ETA {_clock(run_left)}"
    )


def _step_left(phase: Any, stats: Any, elapsed: float, rate: float) -> float:
    left = phase.duration_s - elapsed
    if phase.max_requests is not None:
        sent_rate = stats.sent / elapsed if elapsed > 0 else 0.0
        by_budget = (phase.max_requests - stats.sent) / sent_rate if sent_rate > 0 else math.inf
        left = min(left, max(0.0, by_budget))
    return max(0.0, left)


def _planned(phase: Any) -> float:
    """A later phase's length: its duration, or its request budget at an unknown rate (inf)."""
    return phase.duration_s


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
