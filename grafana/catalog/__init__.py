"""The panel catalog: every dashboard we ship, as data (`grafana.model`).

One source for two renderers: `grafana.generate` writes Grafana's JSON, `grafana.snapshot` draws the same
panels from Prometheus into one HTML file. Add a panel here and both get it.
"""

from __future__ import annotations

from grafana.catalog.engine import engine_detail
from grafana.catalog.gpu import gpu_detail
from grafana.catalog.load_tests import load_tests
from grafana.catalog.overview import overview
from grafana.errors import UnknownDashboard
from grafana.model import Dashboard

__all__ = ["dashboards", "find"]


def dashboards() -> tuple[Dashboard, ...]:
    """Every dashboard, in the order of the committed files' listing."""
    return (overview(), gpu_detail(), engine_detail(), load_tests())


def find(name: str) -> Dashboard:
    """A dashboard by file stem (`overview`), uid (`llmobs-overview`) or title; KeyError lists the choices."""
    for board in dashboards():
        if name in {board.name, board.uid, board.title}:
            return board
    choices = ", ".join(board.name for board in dashboards())
    raise UnknownDashboard(f"no dashboard {name!r}; choose one of {choices}")
