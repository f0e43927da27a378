"""Open-loop overload: the server completes fewer requests than are offered and the backlog grows.

An open loop keeps sending at its rate whatever the server does. Past the server's capacity the requests
in flight grow without bound, every later request waits behind them, and latency measures that queue,
not the server (people have compared mean TTFTs of 172 s and 139 s as engine latency that way). Each
second the runner reports (elapsed, requests finished, requests in flight, offered rate); over a sliding
window the detector calls the phase overloaded when all of these hold:

- completions run below 90 % of the offered rate;
- the in-flight count grew by at least half of what that shortfall accumulates
  ((offered - achieved) x span / 2), by at least 3 requests, and by more than the arrivals' own
  randomness: 3 standard deviations of the arrivals in the span (sqrt(offered x span), x 1/burstiness
  for gamma arrivals). A stable queue's in-flight count goes up and down by about that much (seen:
  without this term a Poisson loop at half the server's capacity was called overloaded in a quarter
  of 25 s steps), while an overloaded one grows in proportion to the span;
- the phase is past its fill: every open loop starts with in-flight rising for about one request's
  duration (nothing has finished yet), so detection waits for completions and for twice the fastest
  tenth of their E2E (p10) beyond the start of the span.

Two spans are judged each second: the last 10 s (a marked overload is called within seconds) and
everything since the fill (a mild one, whose growth per 10 s stays within the noise, is called once
its backlog outgrows it: after about 9 x offered / (offered - achieved)^2 seconds).

The onset is the start of the first span that qualified. Once called, the phase stays overloaded
(its later latency is queueing either way); the figures keep updating: offered and achieved rates since
the onset, in flight then and now.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 10.0
SHORTFALL = 0.9  # achieved below this share of offered
MIN_GROWTH = 3
NOISE_SIGMAS = 3.0  # backlog growth must exceed this many standard deviations of the arrival count


@dataclass(frozen=True)
class Reading:
    t_s: float  # seconds since the phase started
    finished: int
    in_flight: int
    offered_rate: float


@dataclass(frozen=True)
class Overload:
    since_s: float  # onset, seconds since the phase started
    offered_rate: float  # requests/s offered since the onset
    achieved_rate: float  # requests/s completed since the onset
    in_flight_at_onset: int
    in_flight_now: int
    detected_s: float

    @property
    def backlog_growth(self) -> float:
        """Requests per second added to the backlog since the onset."""
        return max(0.0, self.offered_rate - self.achieved_rate)

    def sentence(self, unit_phase: str = "") -> str:
        share = self.achieved_rate / self.offered_rate if self.offered_rate else 0.0
        where = f"{unit_phase} " if unit_phase else ""
        return (
            f"{where}overloaded from {self.since_s:.0f} s on: completing {self.achieved_rate:.2f} of "
            f"{self.offered_rate:.2f} requests/s offered ({share:.0%}), the backlog growing by "
            f"{self.backlog_growth:.2f}/s (in flight {self.in_flight_at_onset} -> {self.in_flight_now}); "
            "latency after that point measures the queue, not the server"
        )

    def as_json(self) -> dict:
        return {
            "since_s": self.since_s,
            "detected_s": self.detected_s,
            "offered_rate": self.offered_rate,
            "achieved_rate": self.achieved_rate,
            "backlog_growth_per_s": self.backlog_growth,
            "in_flight_at_onset": self.in_flight_at_onset,
            "in_flight_now": self.in_flight_now,
        }


class OverloadDetector:
    """Feed one Reading a second; `overload` is set once the phase qualifies. `dispersion` is the
    arrival count's variance over its mean (1 for Poisson; 1 / burstiness for gamma arrivals)."""

    def __init__(self, window_s: float = WINDOW_S, dispersion: float = 1.0) -> None:
        self.window_s = window_s
        self.dispersion = max(1.0, dispersion)
        self._readings: deque[Reading] = deque()
        self._filled: Reading | None = None  # the first reading past the fill: the long span's start
        self._onset: Reading | None = None
        self._offered_sum = 0.0  # offered rates read since the onset
        self._offered_count = 0
        self.overload: Overload | None = None

    def add(self, reading: Reading, fastest_e2e_s: float | None) -> Overload | None:
        """One reading; fastest_e2e_s: the p10 E2E of the phase's finished requests (None: none yet)."""
        if self._onset is not None:
            return self._update(reading)
        self._readings.append(reading)
        while len(self._readings) > 2 and reading.t_s - self._readings[1].t_s >= self.window_s:
            self._readings.popleft()
        if fastest_e2e_s is None or reading.finished == 0:
            return None
        if self._filled is None:
            self._filled = next((r for r in self._readings if r.t_s >= 2 * fastest_e2e_s), None)
        for start in (self._readings[0], self._filled):  # the last window, then all since the fill
            if start is not None and start.t_s >= 2 * fastest_e2e_s and self._qualifies(start, reading):
                self._onset = start
                return self._update(reading)
        return None

    def _qualifies(self, start: Reading, now: Reading) -> bool:
        span = now.t_s - start.t_s
        if span < self.window_s:
            return False
        offered = (start.offered_rate + now.offered_rate) / 2  # exact for a constant rate and a ramp
        achieved = (now.finished - start.finished) / span
        growth = now.in_flight - start.in_flight
        noise = NOISE_SIGMAS * math.sqrt(offered * span * self.dispersion)
        needed = max(MIN_GROWTH, (offered - achieved) * span / 2, noise)
        return offered > 0 and achieved < SHORTFALL * offered and growth >= needed

    def _update(self, reading: Reading) -> Overload:
        onset = self._onset
        assert onset is not None
        if self._offered_count == 0:
            self._offered_sum, self._offered_count = onset.offered_rate, 1
        self._offered_sum += reading.offered_rate
        self._offered_count += 1
        span = max(1e-9, reading.t_s - onset.t_s)
        self.overload = Overload(
            since_s=onset.t_s,
            offered_rate=self._offered_sum / self._offered_count,
            achieved_rate=(reading.finished - onset.finished) / span,
            in_flight_at_onset=onset.in_flight,
            in_flight_now=reading.in_flight,
            detected_s=self.overload.detected_s if self.overload else reading.t_s,
        )
        return self.overload
