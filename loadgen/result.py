"""What a run leaves behind: the data its report is built from.

The runner fills a RunResult when a run ends (finished, stopped or failed); the report, and anything
else that renders or compares runs, reads it and never reaches into the runner. Data flows one way:
scenario -> runner -> RunResult -> report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from loadgen.scenario import Scenario
from loadgen.stats import PhaseStats

__all__ = ["Clock", "RunResult", "SetupRequests"]


@dataclass(frozen=True)
class Clock:
    """One instant read on both clocks: the monotonic one every request time is taken on
    (perf_counter, comparable between processes of one host only) and the wall clock (comparable
    between hosts as far as their clocks agree), so monotonic instants convert to Unix time."""

    perf_counter_ns: int
    unix_ns: int

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter_ns(), time.time_ns())

    @property
    def unix_s(self) -> float:
        return self.unix_ns * 1e-9

    def unix_ns_of(self, perf_counter_ns: int) -> int:
        return self.unix_ns + perf_counter_ns - self.perf_counter_ns

    def unix(self, perf_counter_ns: int) -> float:
        return self.unix_ns_of(perf_counter_ns) * 1e-9


@dataclass(frozen=True)
class RunResult:
    run_id: str
    scenario: Scenario  # the settings (the planned phases, SLOs and their percentile among them)
    model: (
        str | None
    )  # as given or discovered; None when the run stopped before discovery or discovery failed
    started_at: float  # Unix time (s)
    state: str  # finished, failed (pending/running/stopping only while the run is live)
    stopped_early: bool  # a stop (signal, API) ended the run before its phases were done
    workload: dict[str, object] | None  # Workload.describe(); None when setup did not get that far
    stats: tuple[PhaseStats, ...]  # the phases run, in order (a sweep stops at its first miss)
    warmup: PhaseStats | None = None  # the warm-up phase, left out of every figure (warmup.py)
    timing_path: str | None = None  # how response times were taken (network.route); None: no client
    backoff_waits: int = 0  # requests that waited out a connect back-off (backoff.ConnectBackoff)
    backoff_waited_s: float = 0.0  # those waits, summed
    # requests sent before the first phase (calibration probes): the engine counts them, no phase does
    setup: SetupRequests | None = None
    model_note: str | None = None  # why requests named no model (discovery failed), when they did not
    dropped_body_fields: dict[str, str] = field(default_factory=dict)  # --extra-body field -> the refusal
    clock: Clock | None = None  # read when the run started: its monotonic instants as Unix time
    workers: int = 1  # processes that ran this host's part (workers.py)
    worker_failures: tuple[str, ...] = ()  # workers that ended before the run did, and how
    pool: dict[str, object] | None = None  # a pool's own cost: CPU of its parent and workers, bytes sent


@dataclass(frozen=True)
class SetupRequests:
    """Requests of the run's setup, counted so that engine counter deltas add up exactly: an engine's
    tokens = every phase's tokens + these."""

    purpose: str
    sent: int
    succeeded: int
    prompt_tokens: int  # from the server's usage; requests without usage count 0
    output_tokens: int

    def summary(self) -> dict[str, object]:
        return {
            "purpose": self.purpose,
            "sent": self.sent,
            "succeeded": self.succeeded,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
        }
