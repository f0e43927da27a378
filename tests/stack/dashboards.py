"""Every PromQL query in the generated dashboards and Grafana alert rules, and how to run one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.stack.promql import KEYWORDS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
GRAFANA_RULES = ROOT / "grafana" / "provisioning" / "alerting" / "rules.yml"

# Grafana's built-in variables and our SLO variables get concrete values; every other variable
# (host, gpu, target, model, run, ...) becomes "match anything".
CONCRETE = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "10m",
    "ttft_slo": "1.0",
    "tpot_slo": "0.1",
}


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target, query variable and annotation."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
            yield f"variable {variable['name']}", match.group(1) if match else text
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]


def grafana_alert_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(GRAFANA_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for data in rule["data"]:
                if data["datasourceUid"] != "__expr__":
                    yield f"grafana alert {rule['uid']}", data["model"]["expr"]


def all_queries() -> list[tuple[str, str]]:
    found = [
        (f"{name}: {where}", expr) for name, board in dashboards().items() for where, expr in queries(board)
    ]
    return found + list(grafana_alert_queries())


def concrete(expr: str) -> str:
    """The query Grafana would send, with variables replaced."""

    def value(match: re.Match) -> str:
        return CONCRETE.get(match.group(1), ".*")

    return re.sub(r"\$\{?(\w+)\}?", value, expr)


def selectors(expr: str) -> list[str]:
    """The instant-vector selectors of a (variable-free) query, e.g. 'x{a=~".*"}'."""
    braces: list[str] = []

    def stash(match: re.Match) -> str:
        braces.append(match.group(0))
        return f" @{len(braces) - 1}@ "

    text = re.sub(r"\{[^{}]*\}", stash, expr)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"(?<![\w:.@])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)
    found = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(@(\d+)@)?", text):
        name, index = match.group(1), match.group(3)
        if text[match.end() :].lstrip().startswith("(") or name.lower() in KEYWORDS:
            continue
        found.append(name + (braces[int(index)] if index else ""))
    return found
