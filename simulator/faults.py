"""Fault injection settings: what can go wrong, how often, checked once at start.

YAML (``--faults FILE``), every section optional:

    errors: {500: 0.01, 429: 0.02}          # probability per request of answering with that status
    latency_spike: {per_minute: 6, seconds: 1.5}   # engine steps that take `seconds` longer
    stall: {probability: 0.05, seconds: 3}  # a stream pauses mid-way for `seconds`
    drop: {probability: 0.01}               # the connection closes mid-response
    restart: {every_seconds: 120, down_seconds: 3}  # engine restarts: in-flight requests fail,
                                                     # counters reset, 503 while down
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simulator.errors import SimulatorError


class FaultConfigError(SimulatorError, ValueError):
    """A fault setting that cannot be used."""


@dataclass(frozen=True)
class Faults:
    error_rates: dict[int, float] = field(default_factory=dict)
    spike_per_minute: float = 0.0
    spike_seconds: float = 0.0
    stall_probability: float = 0.0
    stall_seconds: float = 0.0
    drop_probability: float = 0.0
    restart_every_seconds: float = 0.0
    restart_down_seconds: float = 2.0

    def __post_init__(self) -> None:
        for code, rate in self.error_rates.items():
            if not 400 <= code <= 599:
                raise FaultConfigError(f"errors: status {code} is not an HTTP error status (400-599)")
            _probability(f"errors.{code}", rate)
        if sum(self.error_rates.values()) > 1:
            raise FaultConfigError("errors: the probabilities add up to more than 1")
        _probability("stall.probability", self.stall_probability)
        _probability("drop.probability", self.drop_probability)
        for name in ["spike_per_minute", "spike_seconds", "stall_seconds", "restart_every_seconds"]:
            if getattr(self, name) < 0:
                raise FaultConfigError(f"{name} must be >= 0")
        if self.restart_down_seconds <= 0:
            raise FaultConfigError("restart.down_seconds must be > 0")

    @property
    def any(self) -> bool:
        return bool(
            self.error_rates
            or self.spike_per_minute
            or self.stall_probability
            or self.drop_probability
            or self.restart_every_seconds
        )


def load_faults(path: str) -> Faults:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise FaultConfigError(f"cannot read fault file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise FaultConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_faults(data)


def parse_faults(data: Any) -> Faults:
    if not isinstance(data, dict):
        raise FaultConfigError("faults: expected a mapping")
    _known("faults", data, {"errors", "latency_spike", "stall", "drop", "restart"})
    errors = _mapping(data, "errors")
    spike = _mapping(data, "latency_spike")
    stall = _mapping(data, "stall")
    drop = _mapping(data, "drop")
    restart = _mapping(data, "restart")
    _known("latency_spike", spike, {"per_minute", "seconds"})
    _known("stall", stall, {"probability", "seconds"})
    _known("drop", drop, {"probability"})
    _known("restart", restart, {"every_seconds", "down_seconds"})
    try:
        error_rates = {int(code): _number(f"errors.{code}", rate) for code, rate in errors.items()}
    except ValueError as exc:
        raise FaultConfigError(f"errors: keys must be HTTP status codes ({exc})") from exc
    return Faults(
        error_rates=error_rates,
        spike_per_minute=_number("latency_spike.per_minute", spike.get("per_minute", 0)),
        spike_seconds=_number("latency_spike.seconds", spike.get("seconds", 0)),
        stall_probability=_number("stall.probability", stall.get("probability", 0)),
        stall_seconds=_number("stall.seconds", stall.get("seconds", 0)),
        drop_probability=_number("drop.probability", drop.get("probability", 0)),
        restart_every_seconds=_number("restart.every_seconds", restart.get("every_seconds", 0)),
        restart_down_seconds=_number("restart.down_seconds", restart.get("down_seconds", 2)),
    )


def parse_error_rate(text: str) -> tuple[int, float]:
    """`500=0.01` -> (500, 0.01), for the --error-rate flag."""
    code, sep, rate = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(code), float(rate)
    except ValueError:
        raise FaultConfigError(f"--error-rate {text!r}: expected STATUS=PROBABILITY, e.g. 500=0.01") from None


def parse_pair(flag: str, text: str) -> tuple[float, float]:
    """`0.05:3` -> (0.05, 3.0), for --stall and --latency-spike."""
    first, sep, second = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(first), float(second)
    except ValueError:
        raise FaultConfigError(f"{flag} {text!r}: expected two numbers A:B") from None


def _mapping(data: dict, key: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise FaultConfigError(f"faults.{key} must be a mapping")
    return value


def _known(where: str, data: dict, known: set[str]) -> None:
    unknown = sorted(str(key) for key in set(data) - known)
    if unknown:
        raise FaultConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def _probability(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise FaultConfigError(f"{name} must be a probability in [0, 1], got {value}")
