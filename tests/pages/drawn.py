"""What a page really drew, read from the DOM in Chromium: per panel, its state and the marks it holds."""

from __future__ import annotations

from tests.support.chromium import Page

# For each panel: where it is, what it says it holds (data-state) and what is drawn in it: plotly lines
# with a path of more than one point, heatmap images, stat values, table rows.
PANELS_JS = """
[...document.querySelectorAll('.panel')].map(p => ({
  dashboard: (p.closest('section') || {}).id || '',
  title: p.querySelector('h3').textContent,
  state: p.dataset.state || '',
  kind: p.dataset.kind || '',
  lines: [...p.querySelectorAll('.scatterlayer .trace path.js-line')]
           .filter(path => (path.getAttribute('d') || '').split(/[MLHVC]/).length > 2).length,
  markers: p.querySelectorAll('.scatterlayer .trace path.point').length,
  bars: p.querySelectorAll('.barlayer .trace path').length,
  images: [...p.querySelectorAll('.heatmaplayer image')]
            .filter(i => (i.getAttribute('href') || i.getAttribute('xlink:href') || '').length > 100).length,
  stats: [...p.querySelectorAll('.stat')].filter(s => s.textContent.trim()).length,
  rows: p.querySelectorAll('tbody tr').length,
  plots: p.querySelectorAll('.plot').length,
  svgs: p.querySelectorAll('.plot svg.main-svg').length,
}))
"""


def panels(page: Page) -> list[dict]:
    return page.evaluate(PANELS_JS)


def drawn(panel: dict) -> bool:
    """A panel shows data: a line, markers, bars, a heatmap, a stat value or table rows."""
    return any(panel[k] for k in ("lines", "markers", "bars", "images", "stats", "rows"))
