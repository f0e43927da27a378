"""Grafana's unit ids (the catalog's `Panel.unit`) as people read them: an axis scale and suffix for a
plot, and one formatted number for a stat or a table cell.

Only the units the catalog and the reports use are spelled out; any other id is shown as a plain number
with the id as its suffix, never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Scale", "format_value", "scale_for"]

_BINARY = ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB"), (1, "B"))
_HERTZ = ((1e9, "GHz"), (1e6, "MHz"), (1e3, "kHz"), (1, "Hz"))
# (from this magnitude, unit size, name): minutes from 2 min, hours from 2 h, as Grafana switches
_SECONDS = (
    (7200, 3600, "h"),
    (120, 60, "min"),
    (1, 1, "s"),
    (1e-3, 1e-3, "ms"),
    (1e-6, 1e-6, "µs"),
    (0, 1e-9, "ns"),
)
_SUFFIX = {"reqps": " req/s", "watt": " W", "celsius": " °C", "tokps": " tok/s", "short": "", "none": ""}


@dataclass(frozen=True)
class Scale:
    """Plot values times `factor`, with `suffix` on the axis and in the hover text."""

    factor: float
    suffix: str
    tickformat: str = ""  # d3 format of the axis ticks ("~s": SI prefixes)

    def apply(self, values: list[float | None]) -> list[float | None]:
        if self.factor == 1:
            return values
        return [None if v is None else v * self.factor for v in values]


def _pick(magnitude: float, steps: tuple[tuple[float, str], ...]) -> tuple[float, str]:
    for size, name in steps:
        if magnitude >= size:
            return size, name
    return steps[-1]


def scale_for(unit: str, magnitude: float) -> Scale:
    """The scale for plotting values whose largest absolute value is `magnitude` (0 when unknown)."""
    magnitude = abs(magnitude) if math.isfinite(magnitude) else 0.0
    if unit == "percentunit":
        return Scale(100.0, "%")
    if unit == "percent":
        return Scale(1.0, "%")
    if unit in ("bytes", "Bps"):
        size, name = _pick(magnitude, _BINARY)
        return Scale(1 / size, f" {name}" + ("/s" if unit == "Bps" else ""))
    if unit == "hertz":
        size, name = _pick(magnitude, _HERTZ)
        return Scale(1 / size, f" {name}")
    if unit == "s":
        if magnitude == 0:
            return Scale(1.0, " s")
        size, name = next((size, name) for start, size, name in _SECONDS if magnitude >= start)
        return Scale(1 / size, f" {name}")
    si = "~s" if magnitude >= 1000 else ""  # SI prefixes from 1k up; below, plain numbers (not 800m)
    return Scale(1.0, _SUFFIX.get(unit, f" {unit}"), si)


def format_value(value: float | None, unit: str) -> str:
    """One value as a person reads it: `1.23 s`, `45.6%`, `12.3 GiB`, `1.5k`; `-` for none."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    scale = scale_for(unit, value)
    scaled = value * scale.factor
    if scale.tickformat == "~s":
        return _si(scaled) + scale.suffix
    if unit not in ("s", "bytes", "Bps", "hertz") and float(scaled).is_integer():
        return f"{int(scaled)}{scale.suffix}"  # counts read as counts: 3, not 3.00
    return f"{_significant(scaled)}{scale.suffix}"


def _significant(value: float) -> str:
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{min(digits, 6)}f}"


def _si(value: float) -> str:
    for size, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{_significant(value / size)}{prefix}"
    return _significant(value)
