"""Assertions every fault case ends with: alive, counted under the right kind, bounded, no secret leaked.

before = checks.scrape(exp.metrics_url)
... the fault ...
checks.assert_alive(exp, sim)
checks.wait_counter_increase(exp.metrics_url, before, "exporter_http_connections_closed_total",
                             {"reason": "request_timeout"}, at_least=500)
checks.assert_no_secret("hunter2", procs=[exp], paths=[tmp], urls=[exp.metrics_url])
checks.assert_bounded(start, exp.resources(), rss_mb=20, fds=10, threads=4)
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.stack import Proc, Resources

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


class Samples:
    """One scrape's samples: value(name, labels) of the series with exactly those labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[SeriesKey, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, labels: Mapping[str, str] | None = None, default: float = 0.0) -> float:
        return self.values.get((name, frozenset((labels or {}).items())), default)

    def total(self, name: str, **match: str) -> float:
        """Sum over every series of name whose labels include match."""
        wanted = set(match.items())
        return sum(v for (n, labels), v in self.values.items() if n == name and wanted <= labels)


def scrape(metrics_url: str, timeout: float = 10) -> Samples:
    response = httpx.get(metrics_url, timeout=timeout)
    response.raise_for_status()
    return Samples(response.text)


def assert_alive(*procs: Proc) -> None:
    dead = {p.name: (p.process.returncode, p.output()[-2000:]) for p in procs if not p.alive()}
    assert not dead, f"process(es) died: {dead}"


def wait_counter_increase(
    metrics_url: str,
    before: Samples,
    name: str,
    labels: Mapping[str, str],
    at_least: float = 1,
    timeout: float = 15,
) -> float:
    """Poll until the counter rose by at_least since `before`; return the increase."""
    deadline = time.monotonic() + timeout
    while True:
        increase = scrape(metrics_url).value(name, labels) - before.value(name, labels)
        if increase >= at_least:
            return increase
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{dict(labels)} rose by {increase} in {timeout}s, wanted {at_least}")
        time.sleep(0.2)


def secret_forms(secret: str) -> set[str]:
    """The secret as it may leak: plain, percent-encoded, and inside basic-auth base64."""
    forms = {secret, urllib.parse.quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}
    return {form for form in forms if form}


def assert_no_secret(
    secret: str,
    *,
    procs: Iterable[Proc] = (),
    paths: Iterable[Path] = (),
    urls: Iterable[str] = (),
    texts: Iterable[str] = (),
) -> None:
    """No form of `secret` in any process output, file (folders recursively), URL body or text."""
    places: dict[str, str] = {f"{p.name} output": p.output() for p in procs}
    for path in paths:
        files = [path] if path.is_file() else [f for f in sorted(path.rglob("*")) if f.is_file()]
        for file in files:
            places[str(file)] = file.read_bytes().decode("latin-1")
    for url in urls:
        places[url] = httpx.get(url, timeout=10).text
    for number, text in enumerate(texts):
        places[f"text {number}"] = text
    forms = secret_forms(secret)
    leaks = sorted(where for where, text in places.items() if any(form in text for form in forms))
    assert not leaks, f"the planted secret appears in: {leaks}"


def assert_bounded(before: Resources, after: Resources, *, rss_mb: float, fds: int, threads: int) -> None:
    """Growth from before to after within the given allowances."""
    grew = {
        "rss_mb": ((after.rss_bytes - before.rss_bytes) / 2**20, rss_mb),
        "fds": (after.fds - before.fds, fds),
        "threads": (after.threads - before.threads, threads),
    }
    over = {what: f"+{value:.1f} > {limit}" for what, (value, limit) in grew.items() if value > limit}
    assert not over, f"grew past its allowance: {over} (before {before}, after {after})"


def wait_until(condition, timeout: float, message: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(interval)
