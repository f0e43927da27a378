"""Generated dashboards: fresh, well-formed, datasource-agnostic, and reading only names we emit."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from grafana import catalog, generate
from tests.stack.dashboards import DASHBOARDS, all_queries, concrete, dashboards
from tests.stack.promql import contract, metric_names, recorded_names
from tests.support.real import require_binary

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "grafana" / "provisioning"


def test_committed_dashboards_are_fresh() -> None:
    rendered = generate.render()
    committed = {path.name: path.read_text() for path in DASHBOARDS.glob("*.json")}
    assert set(committed) == set(rendered), "run `make dashboards`"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is stale: run `make dashboards`"


def test_generation_is_deterministic() -> None:
    assert generate.render() == generate.render()


def test_check_mode_reports_stale_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "OUT_DIR", tmp_path)
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    (tmp_path / "gpu.json").write_text("{}")
    assert generate.main(["--check"]) == 1


def test_catalog_finds_a_dashboard_by_name_uid_or_title() -> None:
    board = catalog.find("load-tests")
    assert catalog.find(board.uid) == board == catalog.find(board.title)
    with pytest.raises(KeyError, match="overview, gpu, engine, load-tests"):
        catalog.find("nope")


def test_one_catalog_panel_per_grafana_panel() -> None:
    """The JSON is a rendering of the catalog: same titles, queries, units and thresholds, in order."""
    for board in catalog.dashboards():
        rendered = dashboards()[f"{board.name}.json"]["panels"]
        assert [p["title"] for p in rendered] == [p.title for p in board.panels]
        for panel, body in zip(board.panels, rendered, strict=True):
            if panel.kind == "row":
                continue
            assert [t["expr"] for t in body["targets"]] == [query.expr for query in panel.queries]
            assert body["fieldConfig"]["defaults"]["unit"] == panel.unit
            steps = body["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert [(s["value"], s["color"]) for s in steps] == list(panel.thresholds)


def walk(node: object) -> list[dict]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(walk(value))
    return found


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_is_well_formed(name: str) -> None:
    board = dashboards()[name]
    assert board["schemaVersion"] == generate.SCHEMA_VERSION
    assert board["uid"].startswith("llmobs-") and len(board["uid"]) <= 40
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["description"], panel["title"]
            assert panel["targets"], panel["title"]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names[0] == "datasource" and len(names) == len(set(names))


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_no_hard_coded_datasource(name: str) -> None:
    for node in walk(dashboards()[name]):
        datasource = node.get("datasource")
        if isinstance(datasource, dict) and datasource.get("type") == "prometheus":
            assert datasource["uid"] == "${datasource}", node.get("title") or node.get("expr")
    assert "__inputs" not in dashboards()[name]


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_variable_a_query_uses_exists(name: str) -> None:
    board = dashboards()[name]
    defined = {v["name"] for v in board["templating"]["list"]} | {"__rate_interval", "__range", "__interval"}
    text = str([expr for _, expr in all_queries() if _.startswith(name)])
    used = set(re.findall(r"\$\{?(\w+)", text))
    assert used <= defined, used - defined


def test_queries_read_only_metrics_we_emit() -> None:
    names = contract()
    recorded = recorded_names()
    unknown = [
        (where, name)
        for where, expr in all_queries()
        for name in metric_names(expr)
        if not names.allows(name, recorded)
    ]
    assert unknown == []


@pytest.mark.real
def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (variables substituted) as a recording rule: a real PromQL parser."""
    binary = require_binary("promtool", "apt-get install prometheus; `make test` does it as root")
    rules = [
        {"record": f"check:query_{i}:parse", "expr": concrete(expr)}
        for i, (_, expr) in enumerate(all_queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    result = subprocess.run(
        [binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_at_the_dashboards_and_fixed_datasource() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    prometheus = next(d for d in datasources if d["type"] == "prometheus")
    assert prometheus["uid"] == "prometheus"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "llmobs.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    rules = yaml.safe_load((PROVISIONING / "alerting" / "rules.yml").read_text())
    uids = {
        data["datasourceUid"] for group in rules["groups"] for rule in group["rules"] for data in rule["data"]
    }
    assert uids == {"prometheus", "__expr__"}
    board_uids = {board["uid"] for board in dashboards().values()}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["dashboardUid"] in board_uids
            assert rule["noDataState"] == "OK"
    policy = yaml.safe_load((PROVISIONING / "alerting" / "policies.yml").read_text())["policies"][0]
    points = yaml.safe_load((PROVISIONING / "alerting" / "contact-points.yml").read_text())["contactPoints"]
    assert policy["receiver"] in {point["name"] for point in points}


@pytest.mark.real
def test_engine_process_panels_tell_two_engines_of_one_kind_apart(tmp_path: Path) -> None:
    """The engine dashboard's process panels carry each tree's target in their legends and keep to the
    selected targets: promtool evaluates their queries against a host with two vLLM trees (targets
    a and b), one tree serving both (a,b) and one on no configured target."""
    binary = require_binary("promtool", "apt-get install prometheus; `make test` does it as root")
    board = catalog.find("engine")
    panels = [p for p in board.panels if any("host_engine_process_" in q.expr for q in p.queries)]
    assert {p.title for p in panels} == {"Engine processes", "Engine processes (identity)"}
    timeseries = next(p for p in panels if p.kind == "timeseries")
    assert all(q.legend.startswith("{{target}} ") for q in timeseries.queries)
    trees = {"1": "a", "2": "b", "3": "a,b", "4": ""}
    series = [
        {"series": f'host_engine_process_{name}{{instance="h", engine_kind="vllm", pid="{pid}", '
                   f'target="{target}"{mode}}}', "values": values}
        for pid, target in trees.items()
        for name, mode, values in (("threads", "", "7x10"), ("cpu_seconds_total", ', mode="user"', "0+60x10"))
    ]  # fmt: skip
    selections = {".*": ["1", "2", "3", "4"], "a": ["1", "3"], "(a|b)": ["1", "2", "3"], "b": ["2", "3"]}
    tests = []
    for selected, pids in selections.items():
        for query in timeseries.queries:
            if "memory" in query.expr:
                continue
            expr = query.expr.replace("$host", "h").replace("$engine_kind", ".*").replace("$target", selected)
            summed = "sum by" in expr  # the CPU rate (1 s/s), else the threads gauge (7)
            samples = [
                {"labels": ("{" if summed else 'host_engine_process_threads{instance="h", ')
                 + f'engine_kind="vllm", pid="{pid}"'
                 + (f', target="{trees[pid]}"' if trees[pid] else "")  # an empty label is no label
                 + (', mode="user"}' if summed else "}"),
                 "value": 1 if summed else 7}
                for pid in pids
            ]  # fmt: skip
            expr = expr.replace("$__rate_interval", "5m")
            tests.append({"expr": expr, "eval_time": "9m", "exp_samples": samples})
    spec = {
        "rule_files": [],
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "process_panels_test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run([binary, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
