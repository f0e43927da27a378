"""Dashboards without Grafana: the catalog's panels drawn from Prometheus into one self-contained HTML file.

    llmobs snapshot --prometheus http://127.0.0.1:9090 --from now-1h --to now -o snapshot.html

catalog (panels, queries, units, legends, thresholds) -> resolve (window, step, variables) ->
fetch (query_range per panel, budgets) -> figures (plotly dicts, stats, tables) -> page (one HTML file).
"""

from grafana.snapshot.render import Outcome, render_panels, snapshot

__all__ = ["Outcome", "render_panels", "snapshot"]
