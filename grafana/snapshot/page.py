"""One self-contained HTML page: figures drawn by plotly.js inlined into the page, tables, text.

The page loads nothing: no CDN, no fonts, no images from elsewhere, so it opens offline and can be
attached to a ticket. Figures are plotly figure dicts kept in one JSON block and drawn on load; when the
last one is drawn the page sets `window.llmobsReady = true` and `data-drawn` on <body> (what the
Chromium tests wait for). Every text that came from outside (labels, names, errors) is escaped here.

plotly is an optional dependency (`pip install 'llmobs[html]'`); `require_plotly()` says so clearly.
Why plotly and not static SVG: bench/RESULTS.md, "Plotting library for HTML pages".
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field

from grafana.errors import GrafanaError

__all__ = ["Cell", "Page", "PlotlyMissing", "require_plotly"]

ROW_PX = 30  # Grafana's grid: a gridPos height unit is 30 px, with 8 px between rows
GAP_PX = 8

STYLE = """
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header { padding: 16px 24px 8px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { font-size: 20px; margin: 0 0 4px; }
header p, .note { margin: 2px 0; color: var(--muted); }
main { padding: 8px 24px 32px; }
section { margin-top: 16px; }
section > h2 { font-size: 16px; margin: 16px 0 8px; }
.grid { display: grid; grid-template-columns: repeat(24, minmax(0, 1fr)); grid-auto-rows: 30px; gap: 8px; }
.flow { display: grid; grid-template-columns: repeat(24, minmax(0, 1fr)); gap: 8px; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 4px; padding: 6px 8px;
         display: flex; flex-direction: column; min-width: 0; overflow: hidden; }
.panel h3 { font-size: 13px; margin: 0 0 2px; white-space: nowrap; overflow: hidden;
            text-overflow: ellipsis; }
.panel .what { color: var(--muted); font-size: 11.5px; margin: 0 0 2px; }
.panel .plot { flex: 1 1 auto; min-height: 0; }
.panel .error { color: #b42318; font-size: 12px; }
.panel .empty { color: var(--muted); margin: auto; }
.row-title { grid-column: 1 / -1; font-size: 15px; font-weight: 600; align-self: end;
             border-bottom: 1px solid var(--line); }
.stat { margin: auto; font-size: 26px; font-weight: 600; text-align: center; }
.stat small { display: block; font-size: 11px; font-weight: 400; color: var(--muted); }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; background: #fff; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.text, th.text { text-align: left; }
.table-wrap { overflow: auto; max-width: 100%; }
dl.defs { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
dl.defs dt { font-weight: 600; } dl.defs dd { margin: 0; }
.verdict { font-size: 15px; padding: 8px 12px; background: #fff; border-left: 4px solid #1f6feb; }
.verdict.bad { border-color: #b42318; } .verdict.good { border-color: #1a7f37; }
.green { color: #1a7f37; } .orange { color: #bc4c00; } .red { color: #b42318; }
"""

DRAW = """
(function () {
  var figures = JSON.parse(document.getElementById("llmobs-figures").textContent);
  var ids = Object.keys(figures), drawn = 0;
  function done() {
    document.body.setAttribute("data-drawn", String(drawn));
    window.llmobsReady = true;
  }
  if (!ids.length) { done(); return; }
  ids.forEach(function (id) {
    var figure = figures[id];
    var config = Object.assign({displaylogo: false, displayModeBar: false, responsive: true},
                                figure.config || {});
    Plotly.newPlot(document.getElementById(id), figure.data, figure.layout, config).then(function () {
      drawn += 1;
      if (drawn === ids.length) { done(); }
    });
  });
})();
"""


class PlotlyMissing(GrafanaError, RuntimeError):
    """plotly.js cannot be had (the package is not installed, or its script cannot be inlined)."""


def require_plotly() -> str:
    """plotly.js, from the plotly package; a clear error when it is not installed."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:
        raise PlotlyMissing(
            "HTML pages need the plotly package (its plotly.js is inlined into the page): "
            "pip install 'llmobs[html]'"
        ) from exc
    script = get_plotlyjs()
    if "</script" in script.lower():  # would end the inline <script> early
        raise PlotlyMissing("this plotly.js contains '</script' and cannot be inlined")
    return script


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def script_json(value: object) -> str:
    """JSON safe inside <script>: no '</' can close the element."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


@dataclass(frozen=True)
class Cell:
    """A table cell: the text shown, and the raw value (data-value) tests compare with the JSON."""

    text: str
    value: object = None
    css: str = ""


@dataclass
class Page:
    title: str
    subtitle: list[str] = field(default_factory=list)
    _parts: list[str] = field(default_factory=list)
    _figures: dict[str, dict] = field(default_factory=dict)
    _open: str | None = None  # the closing tag of the grid now open

    # -- structure -----------------------------------------------------------------------------

    def section(self, title: str, anchor: str = "", grid: bool = False) -> None:
        """A titled section; its panels flow (widths in 24ths) or sit at Grafana grid positions."""
        self._close()
        ident = f' id="{esc(anchor)}"' if anchor else ""
        self._parts.append(f"<section{ident}><h2>{esc(title)}</h2>")
        self._parts.append(f'<div class="{"grid" if grid else "flow"}">')
        self._open = "</div></section>"

    def _close(self) -> None:
        if self._open:
            self._parts.append(self._open)
            self._open = None

    def text(self, paragraph: str, css: str = "note", row: int | None = None) -> None:
        place = f"grid-column: 1 / -1;{f' grid-row: {row};' if row else ''}"
        self._parts.append(f'<p class="{css}" style="{place}">{esc(paragraph)}</p>')

    def raw(self, markup: str) -> None:
        """Markup built by the caller from escaped parts (definition lists, verdicts)."""
        self._parts.append(markup)

    def row_title(self, title: str, x: int = 0, y: int | None = None) -> None:
        place = f"grid-row: {y + 1} / span 1;" if y is not None else ""
        self._parts.append(f'<div class="row-title" style="{place}">{esc(title)}</div>')

    # -- panels --------------------------------------------------------------------------------

    def panel(
        self,
        title: str,
        description: str = "",
        *,
        figure: dict | None = None,
        body: str = "",
        width: int = 24,
        height_px: int | None = None,
        grid_pos: tuple[int, int, int, int] | None = None,  # x, y, w, h in Grafana's grid
        attrs: dict[str, str] | None = None,
    ) -> str:
        """A panel with a title, a line saying what it shows, and a figure or escaped-by-caller body."""
        ident = f"fig-{len(self._figures) + 1}"
        if grid_pos is not None:
            x, y, w, h = grid_pos
            style = f"grid-column: {x + 1} / span {w}; grid-row: {y + 1} / span {h};"
        else:
            style = f"grid-column: span {width};" + (f" height: {height_px}px;" if height_px else "")
        extra = "".join(f' {esc(k)}="{esc(v)}"' for k, v in (attrs or {}).items())
        parts = [
            f'<div class="panel" style="{style}"{extra}>',
            f'<h3 title="{esc(description)}">{esc(title)}</h3>',
        ]
        if description and grid_pos is None:
            parts.append(f'<p class="what">{esc(description)}</p>')
        if figure is not None:
            self._figures[ident] = figure
            parts.append(f'<div class="plot" id="{ident}" data-figure="1"></div>')
        parts.append(body)
        parts.append("</div>")
        self._parts.append("".join(parts))
        return ident

    def table(
        self, headers: list[str], rows: list[list[Cell]], caption: str = "", ident: str = "", width: int = 24
    ) -> None:
        head = "".join(f'<th class="{"text" if i == 0 else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
        body = []
        for row in rows:
            cells = []
            for i, cell in enumerate(row):
                css = " ".join(filter(None, ["text" if i == 0 else "", cell.css]))
                value = "" if cell.value is None else f' data-value="{esc(json.dumps(cell.value))}"'
                cells.append(f'<td class="{css}"{value}>{esc(cell.text)}</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        table_id = f' id="{esc(ident)}"' if ident else ""
        cap = f"<caption class='note'>{esc(caption)}</caption>" if caption else ""
        self._parts.append(
            f'<div class="table-wrap" style="grid-column: span {width}"><table{table_id}>{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        )

    # -- output --------------------------------------------------------------------------------

    def render(self) -> str:
        self._close()
        plotly = require_plotly()
        generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        subtitle = "".join(f"<p>{esc(line)}</p>" for line in [*self.subtitle, f"Generated {generated}"])
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{STYLE}</style>"
            f"<script>{plotly}</script></head><body>"
            f"<header><h1>{esc(self.title)}</h1>{subtitle}</header><main>{''.join(self._parts)}</main>"
            f'<script type="application/json" id="llmobs-figures">{script_json(self._figures)}</script>'
            f"<script>{DRAW}</script></body></html>\n"
        )
