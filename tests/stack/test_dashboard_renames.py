"""No dashboard panel goes empty because vLLM renamed a metric.

Most panels read the exporter's normalized `llm_*` names, which its renames table keeps stable
(exporter/engines/vllm.py NAMES; tests/engines/test_vllm.py). The engine dashboard's "vLLM native"
row reads vLLM's own names, and each name vLLM renamed is read in both spellings
(grafana/catalog/names.py VLLM_OLD_NAMES, `or` over the two). Checked here against real payloads of
vLLM 0.33.0 and 0.10.2 (rendered by their own metrics code, tools/fixtures/) and against 0.10.2 with
the newer names taken out (what a vLLM before the renames serves): every query whose metrics exist
in a payload under some spelling must have a branch that reads only names the payload has, and every
panel that reads vLLM's names must keep at least one such query.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.engines.parse import parse
from exporter.engines.vllm import NAMES
from grafana.catalog.names import VLLM_OLD_NAMES
from tests.engines.test_vllm import without_family
from tests.stack import promql
from tests.stack.dashboards import dashboards

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines" / "vllm"
_NAME = re.compile(r"vllm:[a-zA-Z0-9_:]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def payload_names(text: str) -> set[str]:
    names = set(parse(text).by_sample_name)
    return names | {
        name.removesuffix(suffix) for name in names for suffix in SUFFIXES if name.endswith(suffix)
    }


def before_renames(text: str) -> str:
    for newer in VLLM_OLD_NAMES:
        text = without_family(text, newer)
    return text


PAYLOADS = {
    "v0.33.0-load": payload_names((FIXTURES / "v0.33.0-load.txt").read_text()),
    "v0.10.2-load": payload_names((FIXTURES / "v0.10.2-load.txt").read_text()),
    "v0.10.2 without the newer names": payload_names(
        before_renames((FIXTURES / "v0.10.2-load.txt").read_text())
    ),
}


def branches(expr: str) -> list[str]:
    """The top-level `or` operands of a query."""
    parts, depth, start = [], 0, 0
    for match in re.finditer(r"[()]|\bor\b", expr):
        token = match.group()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0:
            parts.append(expr[start : match.start()])
            start = match.end()
    return [*parts, expr[start:]]


def names_in(expr: str) -> set[str]:
    """The vLLM metrics a query reads (histogram series by their family name)."""
    return {
        next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        for name in _NAME.findall(expr)
    }


def reads(expr: str, names: set[str]) -> bool:
    return any(names_in(branch) and names_in(branch) <= names for branch in branches(expr))


def exists(name: str, names: set[str]) -> bool:
    """The metric is in the payload under its name or its name before vLLM renamed it."""
    return name in names or VLLM_OLD_NAMES.get(name) in names


def vllm_panels() -> list[tuple[str, str, list[str]]]:
    found = []
    for board_name, board in dashboards().items():
        for panel in board["panels"]:
            exprs = [t["expr"] for t in panel.get("targets", []) if _NAME.search(t["expr"])]
            if exprs:
                found.append((board_name, panel["title"], exprs))
    return found


def test_the_dashboards_read_vllm_names_at_all() -> None:
    assert len(vllm_panels()) >= 5


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_vllm_panel_goes_empty_after_a_rename(payload: str) -> None:
    names = PAYLOADS[payload]
    for board, title, exprs in vllm_panels():
        for expr in exprs:
            if all(exists(name, names) for name in names_in(branches(expr)[0])):
                assert reads(expr, names), f"{board} {title!r}: empty on {payload}:\n{expr}"
        assert any(reads(expr, names) for expr in exprs), f"{board} {title!r}: no query answers on {payload}"


def test_the_payload_without_newer_names_really_lacks_them() -> None:
    names = PAYLOADS["v0.10.2 without the newer names"]
    assert not set(VLLM_OLD_NAMES) & names and set(VLLM_OLD_NAMES.values()) <= names
    assert set(VLLM_OLD_NAMES.values()) == set(promql.VLLM_OLD_NAMES)  # the query contract allows them


def test_dashboards_know_every_rename_the_exporter_knows() -> None:
    exporter_renames = {
        f"vllm:{names[0]}": {f"vllm:{old}" for old in names[1:]} for names in NAMES.values() if len(names) > 1
    }
    assert {new: {old} for new, old in VLLM_OLD_NAMES.items()} == exporter_renames
