#!/usr/bin/env python3
"""Run every dashboard, Grafana-alert and recording-rule query against a live Prometheus and say which
answer, which stay silent and why. For a GPU host, where the test suite (CPU only) cannot reach the GPU
panels and rules.

    python3 tools/check_queries.py http://127.0.0.1:9090 [--out queries.md]

Prometheus must have scraped the stack (exporter, load generator, engine) with prometheus/rules/ loaded;
tools/gpu-stack-check.sh starts one when `prometheus` is on the PATH (or PROMETHEUS names the binary).
A query "has data" when it returns a series; it is "silent" when one of its selectors has no data
(e.g. Xid errors on a healthy GPU). A query that returns nothing although all its selectors have data,
or that returns NaN or Inf, is a problem. Exit status 0 when there is none, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stack.dashboards import all_queries, concrete, selectors  # noqa: E402
from tests.stack.promql import rule_groups  # noqa: E402


def query(url: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=15).json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr!r}: {body.get('error')}")
    return body["data"]["result"]


def finite(result: list[dict[str, Any]]) -> bool:
    return all(math.isfinite(float(sample["value"][1])) for sample in result)


@dataclass
class Verdicts:
    answered: list[str] = field(default_factory=list)  # "overview.json: panel 'Title' A", ...
    silent: list[str] = field(default_factory=list)  # with the selectors that have no data
    problems: list[str] = field(default_factory=list)


def classify(url: str) -> Verdicts:
    """Each dashboard and Grafana-alert query: answered, silent for want of data, or a problem."""
    verdicts = Verdicts()
    for where, expr in all_queries():
        text = concrete(expr)
        try:
            result = query(url, text)
        except RuntimeError as exc:
            verdicts.problems.append(f"PROBLEM (does not run) {where}: {exc}")
            continue
        if not finite(result):
            verdicts.problems.append(f"PROBLEM (NaN or Inf) {where}: `{text}`")
        empty = [s for s in selectors(text) if not query(url, f"count({s})")]
        if not result and not empty:  # a series between two scrapes when first asked: ask once more
            result = query(url, text)
        if result:
            verdicts.answered.append(where)
        elif empty:
            verdicts.silent.append(f"{where} (no data for {', '.join(f'`{s}`' for s in empty[:3])})")
        else:
            verdicts.problems.append(
                f"PROBLEM (no answer although every selector has data) {where}: `{text}`"
            )
    return verdicts


def check_dashboards(url: str) -> tuple[list[str], int]:
    verdicts = classify(url)
    lines = ["## Dashboard and Grafana-alert queries", "", *(f"- {p}" for p in verdicts.problems)]
    answered, silent = len(verdicts.answered), len(verdicts.silent)
    lines += [
        "",
        f"{answered} of {answered + silent} queries answered with data; {silent} silent for want of data:",
        "",
    ]
    lines += [f"- {entry}" for entry in verdicts.silent]
    return lines, len(verdicts.problems)


def check_rules(url: str) -> tuple[list[str], int]:
    lines, problems = ["", "## Recording rules", "", "| rule | series | sample |", "|---|---|---|"], 0
    for _, group in rule_groups():
        for rule in group["rules"]:
            if "record" not in rule:
                continue
            result = query(url, rule["record"])
            sample = ""
            if result:
                labels = {k: v for k, v in result[0]["metric"].items() if k != "__name__"}
                sample = f"{float(result[0]['value'][1]):.6g} {labels}"
            if not finite(result):
                problems += 1
            lines.append(f"| `{rule['record']}` | {len(result)} | {sample} |")
    health = httpx.get(f"{url}/api/v1/rules", timeout=15).json()["data"]["groups"]
    failing = [
        f"{rule['name']}: {rule.get('lastError')}"
        for group in health
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    problems += len(failing)
    lines += ["", f"Rules evaluating with errors: {failing or 'none'}"]
    alerts = httpx.get(f"{url}/api/v1/alerts", timeout=15).json()["data"]["alerts"]
    states = sorted({f"{a['labels']['alertname']} ({a['state']})" for a in alerts})
    lines += [f"Alerts pending or firing at the end: {', '.join(states) or 'none'}"]
    return lines, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prometheus", help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    url = args.prometheus.rstrip("/")
    dashboards, problems = check_dashboards(url)
    rules, rule_problems = check_rules(url)
    problems += rule_problems
    text = "\n".join(["# Queries against a live stack", "", *dashboards, *rules, "", f"Problems: {problems}"])
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
