"""Put catalog panels, with their data from Prometheus, onto a page; count what each one showed."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from grafana.model import Dashboard, Placed, layout
from grafana.snapshot.fetch import PanelData, fetch_panel
from grafana.snapshot.figures import (
    heatmap_figure,
    stat_body,
    table_body,
    time_tickformat,
    timeline_figure,
    timeseries_figure,
)
from grafana.snapshot.page import Page, esc
from grafana.snapshot.prometheus import BudgetExceeded, Prometheus, Unreachable
from grafana.snapshot.resolve import Window, variable_values

__all__ = ["Outcome", "render_panels", "snapshot"]

PARALLEL_QUERIES = 4
TITLE_PX = 40  # a panel's title line and padding, inside its grid height


@dataclass
class Outcome:
    """What the page shows, panel by panel: `dashboard / title` -> data, empty, error or skipped."""

    states: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    stopped: str = ""  # why querying stopped early (Prometheus gone, time budget spent)

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)


def snapshot(
    prom: Prometheus, boards: Sequence[Dashboard], window: Window, chosen: dict[str, str], version: str = ""
) -> tuple[Page, Outcome]:
    """Every panel of `boards`, in their Grafana layout, over `window`."""
    names = ", ".join(board.title for board in boards)
    page = Page(
        f"llmobs snapshot: {names}",
        [
            f"{_utc(window.start)} to {_utc(window.end)} (UTC), step {window.step:g} s, "
            f"$__rate_interval {window.builtins()['__rate_interval']}",
            f"Prometheus {prom.url}" + (f" (version {version})" if version else ""),
        ],
    )
    outcome = Outcome()
    for board in boards:
        values = variable_values(board, chosen)
        page.section(board.title, anchor=board.name, grid=True)
        shown = ", ".join(f"{name}={'All' if value == '.*' else value}" for name, value in values.items())
        page.text(f"{board.description} Variables: {shown or 'none'}.", row=1)
        render_panels(page, prom, board, layout(board.panels), values, window, outcome, grid=True)
    return page, outcome


def render_panels(
    page: Page,
    prom: Prometheus,
    board: Dashboard,
    placed: Sequence[Placed],
    values: dict[str, str],
    window: Window,
    outcome: Outcome,
    grid: bool,
) -> None:
    """Query and draw `placed` panels of `board`: at their grid positions (grid) or flowing in order."""
    panels = [p for p in placed if p.panel.kind != "row"]
    results = _fetch_all(prom, panels, values, window, outcome)
    offset = 1 if grid else 0  # the section's description line takes the grid's first row
    for item in placed:
        panel = item.panel
        if panel.kind == "row":
            if grid:
                page.row_title(panel.title, y=item.y + offset)
            continue
        key = f"{board.name} / {panel.title}"
        data = results.get(item.id)
        height = panel.height * 30 + (panel.height - 1) * 8
        pos = (item.x, item.y + offset, panel.width, panel.height) if grid else None
        _draw(page, key, data, height, window, outcome, pos, panel.width if not grid else 24)


def _fetch_all(
    prom: Prometheus, panels: Sequence[Placed], values: dict[str, str], window: Window, outcome: Outcome
) -> dict[int, PanelData]:
    results: dict[int, PanelData] = {}
    with ThreadPoolExecutor(PARALLEL_QUERIES) as pool:
        futures = {p.id: pool.submit(_fetch_one, prom, p, values, window, outcome) for p in panels}
        for ident, future in futures.items():
            data = future.result()
            if data is not None:
                results[ident] = data
    return results


def _fetch_one(
    prom: Prometheus, placed: Placed, values: dict[str, str], window: Window, outcome: Outcome
) -> PanelData | None:
    if outcome.stopped:
        return None
    try:
        return fetch_panel(prom, placed.panel, values, window)
    except (Unreachable, BudgetExceeded) as exc:
        outcome.stopped = outcome.stopped or str(exc)
        return None


def _draw(
    page: Page,
    key: str,
    data: PanelData | None,
    height: int,
    window: Window,
    outcome: Outcome,
    pos: tuple[int, int, int, int] | None,
    width: int,
) -> None:
    title = key.split(" / ", 1)[1]
    if data is None:
        outcome.states[key] = "skipped"
        body = f'<p class="error">not queried: {esc(outcome.stopped)}</p>'
        page.panel(title, "", body=body, grid_pos=pos, width=width, attrs={"data-state": "skipped"})
        return
    panel = data.panel
    state = "error" if data.errors and not data.has_data else ("data" if data.has_data else "empty")
    outcome.states[key] = state
    if data.errors:
        outcome.errors[key] = data.errors
    notes = "".join(f'<p class="error">{esc(error)}</p>' for error in data.errors)
    if data.left_out:
        notes += f'<p class="note">{data.left_out} more series not shown (--max-series)</p>'
    attrs = {"data-state": state, "data-series": str(len(data.lines)), "data-kind": panel.kind}
    described = 32 if pos is None else 0  # flowing panels show their description above the plot
    plot_height = max(60, height - TITLE_PX - described - (18 if notes else 0))
    figure = None
    body = notes
    if not data.has_data and panel.kind != "table":
        body += '<p class="empty">No data</p>'
    elif panel.kind == "timeseries":
        figure = timeseries_figure(data, plot_height, window.step)
    elif panel.kind == "heatmap":
        figure = heatmap_figure(data, plot_height)
    elif panel.kind == "state-timeline":
        figure = timeline_figure(data, plot_height, window.step)
    elif panel.kind == "stat":
        body += stat_body(data)
    elif panel.kind == "table":
        body += table_body(data) if data.lines else '<p class="empty">No data</p>'
    if figure is not None:  # the whole window, as Grafana shows it, not just where there is data
        figure["layout"]["xaxis"]["range"] = [round(window.start * 1000), round(window.end * 1000)]
        figure["layout"]["xaxis"]["tickformat"] = time_tickformat(window.end - window.start)
    page.panel(
        title,
        panel.description,
        figure=figure,
        body=body,
        grid_pos=pos,
        width=width,
        height_px=None if pos else height,
        attrs=attrs,
    )


def _utc(seconds: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
