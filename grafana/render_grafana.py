"""The catalog in Grafana's classic dashboard JSON model (schemaVersion 41, Grafana 11.6 as pinned in
docker-compose.yml).

Every query goes through the `${datasource}` variable (no datasource ids), and panel ids and positions
come from the catalog's order (`model.layout`), so the output is deterministic.
"""

from __future__ import annotations

import json

from grafana.model import (
    Annotation,
    CustomVariable,
    Dashboard,
    Panel,
    Placed,
    Query,
    QueryVariable,
    Step,
    Variable,
    layout,
)

__all__ = ["SCHEMA_VERSION", "dashboard_json", "dashboard_text"]

SCHEMA_VERSION = 41
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["llmobs"]

ALERT_ANNOTATION = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}

PANEL_OPTIONS: dict[str, dict] = {
    "timeseries": {
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    },
    "stat": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "auto",
    },
    "table": {"cellHeight": "sm", "showHeader": True},
    "heatmap": {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
        "tooltip": {"mode": "single", "yHistogram": True},
        "rowsFrame": {"layout": "auto"},
    },
    "state-timeline": {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "mergeValues": True,
        "showValue": "never",
        "rowHeight": 0.9,
    },
}
TIMESERIES_STYLE = {
    "drawStyle": "line",
    "fillOpacity": 10,
    "lineWidth": 1,
    "showPoints": "never",
    "spanNulls": False,
}


def thresholds_json(steps: tuple[Step, ...]) -> dict:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def target_json(query: Query, ref: str) -> dict:
    target = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "instant": query.instant,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "refId": ref,
    }
    if query.table:
        target["format"] = "table"
    if query.heatmap:
        target["format"] = "heatmap"
    return target


def field_defaults(panel: Panel) -> dict:
    defaults: dict = {"unit": panel.unit, "thresholds": thresholds_json(panel.thresholds)}
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.kind == "timeseries":
        defaults["custom"] = dict(TIMESERIES_STYLE)
    return defaults


def panel_options(panel: Panel) -> dict:
    options = json.loads(json.dumps(PANEL_OPTIONS[panel.kind]))  # a fresh copy per panel
    if panel.kind == "heatmap":
        options["yAxis"] = {"axisPlacement": "left", "unit": panel.unit}
    return options


def panel_json(placed: Placed) -> dict:
    panel = placed.panel
    pos = {"h": panel.height, "w": panel.width, "x": placed.x, "y": placed.y}
    if panel.kind == "row":
        return {
            "collapsed": False,
            "gridPos": pos,
            "id": placed.id,
            "panels": [],
            "title": panel.title,
            "type": "row",
        }
    body = {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": field_defaults(panel), "overrides": []},
        "gridPos": pos,
        "id": placed.id,
        "options": panel_options(panel),
        "targets": [target_json(query, chr(ord("A") + i)) for i, query in enumerate(panel.queries)],
        "title": panel.title,
        "type": panel.kind,
    }
    if panel.kind == "table":
        body["transformations"] = [
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}}
        ]
    return body


# ---------------------------------------------------------------------------------------------- variables


def datasource_variable() -> dict:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def variable_json(variable: Variable) -> dict:
    if isinstance(variable, QueryVariable):
        return {
            "allValue": variable.all_value,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": DATASOURCE,
            "definition": variable.query,
            "hide": 0,
            "includeAll": True,
            "label": variable.label,
            "multi": True,
            "name": variable.name,
            "options": [],
            "query": variable.query,
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "type": "query",
        }
    assert isinstance(variable, CustomVariable)
    default = variable.default
    return {
        "current": {"selected": True, "text": default, "value": default},
        "description": variable.description,
        "hide": 0,
        "includeAll": False,
        "label": variable.label,
        "multi": False,
        "name": variable.name,
        "options": [{"selected": v == default, "text": v, "value": v} for v in variable.values],
        "query": ",".join(variable.values),
        "type": "custom",
    }


def annotation_json(annotation: Annotation) -> dict:
    return {
        "datasource": DATASOURCE,
        "enable": True,
        "expr": annotation.expr,
        "iconColor": annotation.color,
        "name": annotation.name,
        "step": annotation.step,
        "tagKeys": annotation.tag_keys,
        "textFormat": "",
        "titleFormat": annotation.title_format,
        "useValueForTime": False,
    }


# ---------------------------------------------------------------------------------------------- dashboard


def dashboard_json(board: Dashboard) -> dict:
    return {
        "annotations": {"list": [ALERT_ANNOTATION, *map(annotation_json, board.annotations)]},
        "description": board.description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "tags": TAGS,
                "targetBlank": False,
                "title": "llmobs",
                "type": "dashboards",
            }
        ],
        "panels": [panel_json(placed) for placed in layout(board.panels)],
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": [datasource_variable(), *map(variable_json, board.variables)]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": board.title,
        "uid": board.uid,
        "version": 1,
        "weekStart": "",
    }


def dashboard_text(board: Dashboard) -> str:
    """The file as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(dashboard_json(board), indent=2, sort_keys=True) + "\n"
