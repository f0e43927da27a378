"""A comparison as people read it: a console table, and an HTML page with the same table and the runs'
distributions and throughput overlaid."""

from __future__ import annotations

from grafana.snapshot.figures import PALETTE, base_layout
from grafana.snapshot.page import Cell, Page, esc
from grafana.snapshot.units import format_value
from loadgen.html.compare import TABLE, Comparison, Row, unit_of
from loadgen.html.data import LATENCIES, RunData
from loadgen.html.figures import cdf_figure

__all__ = ["compare_page", "compare_text"]


def _change(row: Row, i: int) -> str:
    change = row.changes[i]
    if change is None:
        return ""
    text = f"{change:+.1%}"
    interval = row.intervals[i]
    if interval is not None:
        text += f" [{interval[0]:+.1%}, {interval[1]:+.1%}]"
    return text


def _rows(comparison: Comparison, phase: int) -> list[Row]:
    return [row for figure in TABLE if (row := comparison.row(phase, figure)) is not None]


def compare_text(comparison: Comparison) -> str:
    """The console table: each figure per run, and each run's change against the first [95 % CI]."""
    names = comparison.names
    out = []
    for phase in sorted({row.phase for row in comparison.rows}):
        rows = _rows(comparison, phase)
        out.append(
            f"== phase {phase + 1}: "
            + " | ".join(f"{n}: {p}" for n, p in zip(names, rows[0].phases, strict=True))
        )
        table = [["figure", *names]]
        for row in rows:
            cells = [row.figure, format_value(row.values[0], unit_of(row.figure))]
            for i in range(1, len(names)):
                cells.append(f"{format_value(row.values[i], unit_of(row.figure))} {_change(row, i)}".strip())
            table.append(cells)
        widths = [max(len(line[c]) for line in table) + 2 for c in range(len(table[0]))]
        for line in table:
            out.append(
                line[0].ljust(widths[0])
                + "".join(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True))
            )
    out.append(
        f"changes against {names[0]}; [95 % bootstrap interval, {comparison.resamples} resamples, seed "
        f"{comparison.seed}] where per-request records were given"
    )
    return "\n".join(out)


def compare_page(comparison: Comparison, runs: list[tuple[str, RunData]], failures: list[str]) -> Page:
    names = comparison.names
    page = Page(
        "Load-test comparison: " + " vs ".join(names),
        [
            f"{name}: {data.source}" + (f" + {data.jsonl}" if data.jsonl else " (no JSONL)")
            for name, data in runs
        ],
    )
    if failures:
        page.section("Regression gates", anchor="gates")
        for failure in failures:
            page.raw(f'<p class="verdict bad" style="grid-column: 1 / -1">{esc(failure)}</p>')
    for phase in sorted({row.phase for row in comparison.rows}):
        rows = _rows(comparison, phase)
        page.section(f"Phase {phase + 1}: " + " | ".join(rows[0].phases), anchor=f"phase-{phase + 1}")
        headers = ["figure", *names, *(f"{n} vs {names[0]}" for n in names[1:])]
        table = []
        for row in rows:
            unit = unit_of(row.figure)
            cells = [Cell(row.figure, row.figure)]
            cells += [Cell(format_value(v, unit), v) for v in row.values]
            cells += [Cell(_change(row, i), row.changes[i]) for i in range(1, len(names))]
            table.append(cells)
        page.table(
            headers,
            table,
            f"Changes against {names[0]}, with a 95 % bootstrap interval "
            f"({comparison.resamples} resamples, seed {comparison.seed}) where per-request records were "
            "given.",
            ident=f"compare-{phase + 1}",
        )
    page.section("Distributions, overlaid", anchor="distributions")
    for metric in LATENCIES:
        figure, note = cdf_figure(runs, metric)
        if figure is None:
            page.panel(f"CDF of {metric.upper()}", "", body='<p class="empty">No values.</p>', width=12)
        else:
            page.panel(
                f"CDF of {metric.upper()}", note, figure=figure, width=12, attrs={"data-figure-kind": "cdf"}
            )
    page.section("Throughput", anchor="throughput")
    for figure_name, title in (
        ("requests_per_s", "Requests per second"),
        ("output_tokens_per_s", "Output tokens per second"),
    ):
        page.panel(title, "Per phase, one bar per run.", figure=_bars(comparison, figure_name), width=12)
    return page


def _bars(comparison: Comparison, figure: str) -> dict:
    phases = sorted({row.phase for row in comparison.rows if row.figure == figure})
    traces = []
    for i, name in enumerate(comparison.names):
        ys = [comparison.row(p, figure).values[i] for p in phases]  # type: ignore[union-attr]
        traces.append(
            {
                "type": "bar",
                "name": name,
                "x": [f"phase {p + 1}" for p in phases],
                "y": ys,
                "marker": {"color": PALETTE[i % len(PALETTE)]},
                "hovertemplate": "%{y:.4~g}",
            }
        )
    layout = base_layout(300, time_axis=False, series=len(traces))
    layout["barmode"] = "group"
    return {"data": traces, "layout": layout}
