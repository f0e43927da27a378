"""The grafana wing's errors meant for people have one root, its tree in grafana/errors.py is complete, and
`llmobs snapshot` shows each once, bounded however much of an input it echoes."""

from __future__ import annotations

import subprocess
import sys

import pytest

import grafana
from grafana import catalog
from grafana.errors import GrafanaError, UnknownDashboard
from grafana.snapshot.page import PlotlyMissing
from grafana.snapshot.prometheus import BudgetExceeded, PrometheusError, QueryFailed, Unreachable
from grafana.snapshot.resolve import ResolveError
from tests.support.error_tree import undrawn_errors


def test_every_error_meant_for_people_has_one_root() -> None:
    for error in (PrometheusError, Unreachable, QueryFailed, BudgetExceeded, ResolveError, PlotlyMissing):
        assert issubclass(error, GrafanaError), error
    # as before the root: older except clauses still catch them
    assert issubclass(ResolveError, ValueError) and issubclass(PlotlyMissing, RuntimeError)
    with pytest.raises(KeyError):
        catalog.find("nope")


def test_the_error_tree_in_the_docstring_names_every_subclass() -> None:
    assert not undrawn_errors(grafana, GrafanaError)


def test_an_unknown_dashboard_reads_as_a_sentence_not_a_quoted_key() -> None:
    with pytest.raises(UnknownDashboard) as caught:
        catalog.find("nope")
    assert str(caught.value).startswith("no dashboard 'nope'; choose one of overview")


def test_snapshot_shows_a_megabyte_variable_bounded_once(tmp_path) -> None:
    value = "x" * 100_000  # one argument may be at most 128 KiB (Linux MAX_ARG_STRLEN)
    result = subprocess.run(
        [sys.executable, "-m", "grafana.cli", "snapshot", "--prometheus", "http://127.0.0.1:1",
         "--var", f"{value}=1", "-o", str(tmp_path / "s.html")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "no such variable in these dashboards: xxx" in result.stderr and "characters cut]" in result.stderr
    assert len(result.stderr) < 1200 and result.stderr.count("llmobs snapshot:") == 1
