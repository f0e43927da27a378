"""A faster rendering of plain gauge, counter, histogram and summary families, byte for byte what
prometheus_client writes.

prometheus_client validates and escapes every label name of every sample on every scrape; for the
exporter's few hundred series that is most of a scrape's CPU (measured: ~27 us a sample). Families
whose names and label names are plain `[a-zA-Z_][a-zA-Z0-9_]*` and whose samples carry no timestamp
or exemplar are written here, with names checked once and remembered; every other family (`_created`
samples, units, info and stateset types, names with colons, anything unusual) is handed to
prometheus_client's own encoder, so the output is the library's in all cases.
tests/exporter/test_exposition.py compares both byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import partial

from prometheus_client import exposition, openmetrics
from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.utils import floatToGoString

_PLAIN_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_known_plain: set[str] = set()
# Each series' line up to its value, by its name and labels: a series is written on every scrape with the
# same labels, and sorting, joining and checking them was most of the time per sample (bench/RESULTS.md).
MAX_PREFIXES = 100_000  # then the cache starts anew: series that come and go cannot grow it without bound
_prefixes: dict[tuple[str, ...], str] = {}
EOF = b"# EOF\n"


def _plain(name: str) -> bool:
    if name in _known_plain:
        return True
    if _PLAIN_NAME.match(name) and not name.startswith("__"):
        if len(_known_plain) < 10_000:
            _known_plain.add(name)
        return True
    return False


def _value_escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


# The sample names each type may carry on the fast path; others (`_created`, `_gsum`, ...) are moved or
# written differently by the library, so a family with them takes the library's path.
_SUFFIXES = {
    "gauge": ("",),
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


def _fast_family(metric: Metric) -> bool:
    suffixes = _SUFFIXES.get(metric.type)
    if suffixes is None or metric.unit or not _plain(metric.name):
        return False
    names = {metric.name + suffix for suffix in suffixes}
    known = _known_plain.issuperset
    for sample in metric.samples:
        if sample.name not in names or sample.timestamp is not None or sample.exemplar is not None:
            return False
        if sample.native_histogram is not None:
            return False
        if not known(sample.labels) and not all(_plain(k) for k in sample.labels):
            return False
    return True


def _sample_lines(metric: Metric, out: list[str]) -> None:
    prefixes = _prefixes
    for sample in metric.samples:
        labels = sample.labels
        key = (sample.name, *labels, *labels.values())  # the same length means as many labels: unambiguous
        prefix = prefixes.get(key)
        if prefix is None:
            if len(prefixes) >= MAX_PREFIXES:
                prefixes.clear()
            prefix = prefixes[key] = _prefix(sample.name, labels)
        out.append(f"{prefix}{floatToGoString(sample.value)}\n")


def _prefix(name: str, labels: dict[str, str]) -> str:
    """`name{labels} `: a sample line up to its value."""
    if not labels:
        return f"{name} "
    text = ",".join([f'{k}="{v}"' for k, v in sorted(labels.items())])
    if "\\" in text or "\n" in text or text.count('"') != 2 * len(labels):  # a value to escape
        text = ",".join([f'{k}="{_value_escape(v)}"' for k, v in sorted(labels.items())])
    return f"{name}{{{text}}} "


class Families:
    """Ready families in the shape prometheus_client's encoders take (an object with collect())."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families


def render_families(metrics: Iterable[Metric], openmetrics: bool) -> bytes:
    """Text 0.0.4, or OpenMetrics 1.0.0 without its closing `# EOF` (so rendered parts can be joined)."""
    out: list[str] = []
    for metric in metrics:
        if not _fast_family(metric):
            if openmetrics:
                out.append(
                    om_exposition.generate_latest(Families([metric])).decode().removesuffix(EOF.decode())
                )
            else:
                out.append(exposition.generate_latest(Families([metric])).decode())
            continue
        if openmetrics:
            name, help_text = metric.name, _value_escape(metric.documentation)
        else:
            name = metric.name + ("_total" if metric.type == "counter" else "")
            help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {metric.type}\n")
        _sample_lines(metric, out)
    return "".join(out).encode("utf-8")


def render_text(registry: object) -> bytes:
    """Prometheus text format 0.0.4, as prometheus_client.exposition.generate_latest."""
    return render_families(registry.collect(), openmetrics=False)  # type: ignore[attr-defined]


def render_openmetrics(registry: object) -> bytes:
    """OpenMetrics 1.0.0 text, as prometheus_client.openmetrics.exposition.generate_latest."""
    return render_families(registry.collect(), openmetrics=True) + EOF  # type: ignore[attr-defined]


def fast_encoder(accept_header: str | None) -> tuple[Callable[[object], bytes], str]:
    """prometheus_client's content negotiation, with our renderers for its two usual answers."""
    encoder, content_type = exposition.choose_encoder(accept_header or "")
    if encoder is exposition.generate_latest:
        return render_text, content_type
    if (
        isinstance(encoder, partial)
        and encoder.func is om_exposition.generate_latest
        and encoder.keywords.get("escaping") == openmetrics.exposition.UNDERSCORES
        and encoder.keywords.get("version") == "1.0.0"
    ):
        return render_openmetrics, content_type
    return encoder, content_type


__all__ = ["EOF", "Families", "fast_encoder", "render_families", "render_openmetrics", "render_text"]
