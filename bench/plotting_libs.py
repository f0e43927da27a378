#!/usr/bin/env python3
"""Which plotting library for our self-contained HTML pages: plotly (JS inlined), bokeh (JS inlined) or
matplotlib (static SVG inlined), side by side on the same data in one run.

Two realistic pages, each built by every library from the same arrays:
- report: a 4-level sweep of 20,000 requests: CDFs of TTFT, TPOT, ITL, E2E (4 phases overlaid, 1,000
  points each), 6 time series over 360 windows of 10 s (4 series each), 2 sweep plots: 12 figures.
- snapshot: 60 dashboard panels, 3 series of 300 points each.

For each: seconds to build the HTML in Python, file size, and in headless Chromium (Debian's) the time
from navigation to the load event and until every plot is drawn (an SVG or canvas in every figure),
plus console errors and network requests (must be none).

    python3 bench/plotting_libs.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.chromium import ChromiumError, chromium  # noqa: E402

Series = tuple[str, np.ndarray, np.ndarray]  # name, x, y
Figure = tuple[str, list[Series]]  # title, series


def report_figures(rng: np.random.Generator) -> list[Figure]:
    figures: list[Figure] = []
    for metric, scale in (("TTFT", 0.3), ("TPOT", 0.02), ("ITL", 0.02), ("E2E", 3.0)):
        series = []
        for level in (8, 16, 32, 64):
            values = np.sort(rng.lognormal(np.log(scale * level / 8), 0.5, 5000))
            q = np.linspace(0, 1, 1000)
            series.append((f"{level} users", np.quantile(values, q), q))
        figures.append((f"CDF of {metric}", series))
    t = np.arange(360) * 10.0
    for name in ("requests/s", "output tokens/s", "in flight", "TTFT p50/p95", "TPOT p50/p95", "errors"):
        series = [(f"{name} {i}", t, rng.random(360).cumsum()) for i in range(4)]
        figures.append((name, series))
    levels = np.array([8, 16, 32, 64.0])
    figures.append(
        ("throughput vs users", [("req/s", levels, levels * 1.7), ("tok/s", levels, levels * 200)])
    )
    figures.append(("TTFT p95 vs users", [("p95", levels, levels * 0.1), ("SLO", levels, np.full(4, 2.0))]))
    return figures


def snapshot_figures(rng: np.random.Generator) -> list[Figure]:
    t = np.arange(300) * 15.0
    return [
        (f"panel {i}", [(f"series {j}", t, rng.random(300).cumsum()) for j in range(3)]) for i in range(60)
    ]


# ---------------------------------------------------------------------------------------------- builders


def page(body: str, head: str = "") -> str:
    return f"<!doctype html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>"


def build_plotly(figures: list[Figure]) -> str:
    import plotly.graph_objects as go
    import plotly.offline

    parts = []
    for title, series in figures:
        fig = go.Figure(
            [go.Scatter(x=x, y=y, name=name, mode="lines") for name, x, y in series],
            layout={"title": title, "height": 320, "margin": {"t": 40, "b": 30, "l": 50, "r": 10}},
        )
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))
    script = f"<script>{plotly.offline.get_plotlyjs()}</script>"
    return page("".join(parts), script)


def build_bokeh(figures: list[Figure]) -> str:
    from bokeh.embed import components
    from bokeh.palettes import Category10
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    plots = []
    for title, series in figures:
        plot = figure(title=title, height=320, width=900, sizing_mode="stretch_width")
        for i, (name, x, y) in enumerate(series):
            plot.line(x, y, legend_label=name, color=Category10[10][i % 10])
        plots.append(plot)
    script, divs = components(plots)
    return page("".join(divs), INLINE.render() + script)


def build_matplotlib(figures: list[Figure]) -> str:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    parts = []
    for title, series in figures:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        for name, x, y in series:
            ax.plot(x, y, label=name, linewidth=1)
        ax.set_title(title)
        ax.legend(fontsize="small")
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", bbox_inches="tight")
        plt.close(fig)
        svg = buffer.getvalue()
        parts.append(f"<figure>{svg[svg.index('<svg') :]}</figure>")
    return page("".join(parts))


BUILDERS: dict[str, tuple[Callable[[list[Figure]], str], str]] = {
    # library -> (builder, JS expression: true once every figure is drawn)
    "plotly": (
        build_plotly,
        "[...document.querySelectorAll('.js-plotly-plot')]"
        ".every(d => d.querySelector('.main-svg .scatterlayer path'))",
    ),
    "bokeh": (
        build_bokeh,
        "(() => { const canvases = r => [...r.querySelectorAll('*')]"
        ".reduce((n, e) => n + (e.tagName === 'CANVAS') + (e.shadowRoot ? canvases(e.shadowRoot) : 0), 0);"
        " return [...document.querySelectorAll('.bk-Figure')].filter(f => canvases(f.shadowRoot || f)).length"
        " >= {count}; })()",
    ),
    "matplotlib": (build_matplotlib, "document.querySelectorAll('figure svg').length >= {count}"),
}


def measure(library: str, figures: list[Figure], repeat: int, out: Path) -> dict:
    build, ready = BUILDERS[library]
    builds, loads, readies, errors, network = [], [], [], set(), set()
    for _ in range(repeat):
        started = time.perf_counter()
        html = build(figures)
        builds.append(time.perf_counter() - started)
    out.write_text(html)
    with chromium() as browser:
        for _ in range(repeat):
            p = browser.open(out, ready=ready.replace("{count}", str(len(figures))), timeout=120)
            loads.append(p.loaded_s)
            readies.append(p.ready_s)
            errors.update(p.errors)
            network.update(p.network)
            p.close()
    return {
        "library": library,
        "figures": len(figures),
        "bytes": out.stat().st_size,
        "build_s": statistics.median(builds),
        "load_s": statistics.median(loads),
        "drawn_s": statistics.median(readies),
        "errors": sorted(errors),
        "network": sorted(network),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("plotly", "bokeh", "matplotlib", "numpy")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the pages in this folder")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    pages = {"report": report_figures(rng), "snapshot": snapshot_figures(rng)}
    print(json.dumps(versions()))
    print(
        "| page | library | figures | file KB | build s | Chromium load s | all drawn s | errors | network |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name, figures in pages.items():
            for library in BUILDERS:
                try:
                    r = measure(library, figures, args.repeat, folder / f"{name}-{library}.html")
                except ChromiumError as exc:
                    print(f"| {name} | {library} | {len(figures)} | did not finish: {exc} |", flush=True)
                    continue
                print(
                    f"| {name} | {library} | {r['figures']} | {r['bytes'] / 1024:,.0f} | {r['build_s']:.2f} "
                    f"| {r['load_s']:.2f} | {r['drawn_s']:.2f} | {len(r['errors'])} | {len(r['network'])} |",
                    flush=True,
                )
                for message in r["errors"] + r["network"]:
                    print(f"  {library}: {message[:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
