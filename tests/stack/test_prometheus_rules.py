"""promtool checks the scrape config and rules, runs the rule unit tests, and every rule is covered."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.stack.promql import ROOT, contract, metric_names, recorded_names, rule_groups
from tests.support.real import require_binary

pytestmark = pytest.mark.real  # promtool

PROMETHEUS = ROOT / "prometheus"
TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = require_binary("promtool", "apt-get install prometheus; `make test` does it as root")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS)


def test_scrape_config_and_rule_files_are_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files globs must find our rules (a wrong glob would load nothing, silently).
    assert f"{len(list((PROMETHEUS / 'rules').glob('*.yml')))} rule files found" in result.stdout


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", *[str(p) for p in sorted((PROMETHEUS / "rules").glob("*.yml"))])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(test_file: Path) -> None:
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def load_tests() -> list[dict]:
    return [case for path in TESTS for case in yaml.safe_load(path.read_text())["tests"]]


def positively_tested(cases: list[dict]) -> set[str]:
    """Recording rules that some promql_expr_test reads and expects at least one sample from. A test
    expecting no samples (or reading the rule through absent()) passes for a rule that records nothing,
    so it does not count."""
    return {
        name
        for case in cases
        for t in case.get("promql_expr_test", [])
        if t.get("exp_samples") and "absent" not in t["expr"]
        for name in metric_names(t["expr"])
    }


def test_every_recording_rule_has_a_unit_test_with_samples() -> None:
    assert recorded_names() - positively_tested(load_tests()) == set()


def test_an_expectation_of_no_samples_does_not_count_as_a_test() -> None:
    sample = [{"labels": "{}", "value": 1}]
    empty = {"expr": "r:a:rate5m", "eval_time": "1m", "exp_samples": []}
    absent = {"expr": "absent(r:b:rate5m)", "eval_time": "1m", "exp_samples": sample}
    real = {"expr": "r:c:rate5m > 0", "eval_time": "1m", "exp_samples": sample}
    assert positively_tested([{"promql_expr_test": [empty, absent, real]}]) == {"r:c:rate5m"}


def test_every_alert_is_tested_firing_and_silent() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in load_tests():
        for t in case.get("alert_rule_test", []):
            (fires if t.get("exp_alerts") else silent).add(t["alertname"])
    alerts = {rule["alert"] for _, group in rule_groups() for rule in group["rules"] if "alert" in rule}
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"


def test_every_alert_has_severity_summary_description_runbook() -> None:
    for path, group in rule_groups():
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, (path, rule["alert"])
            assert {"summary", "description", "runbook"} <= set(rule["annotations"]), (path, rule["alert"])


def test_rules_read_only_metrics_we_emit() -> None:
    names = contract()
    recorded = recorded_names()
    unknown = {
        (path.name, rule.get("record") or rule.get("alert"), name)
        for path, group in rule_groups()
        for rule in group["rules"]
        for name in metric_names(rule["expr"])
        if not names.allows(name, recorded)
    }
    assert unknown == set()


def test_name_check_catches_the_classic_mistakes() -> None:
    names = contract()
    assert not names.allows("vllm:num_preemptions", set())  # the counter is served as ..._total
    assert not names.allows("llm_kv_cache_usage_perc", set())
    assert not names.allows("gpu_temperature_celsius_bucket", set())  # not a histogram
    assert names.allows("loadgen_time_to_first_token_seconds_bucket", set())
    assert metric_names("sum by (le) (rate(vllm:num_preemptions[5m])) / on (a) group_left b") == {
        "vllm:num_preemptions",
        "b",
    }
    assert metric_names('histogram_quantile(0.95, x{le="1.0"}) > 1e9 offset 5m') == {"x"}


def test_alertmanager_config_routes_to_declared_receivers() -> None:
    config = yaml.safe_load((PROMETHEUS / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert {r["receiver"] for r in routes if "receiver" in r} <= receivers
    alerts = {rule["alert"] for _, group in rule_groups() for rule in group["rules"] if "alert" in rule}
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            if matcher.startswith("alertname="):
                assert matcher.split("=", 1)[1].strip('"') in alerts, matcher


def amtool(*args: str) -> subprocess.CompletedProcess:
    binary = require_binary("amtool", "apt-get install prometheus-alertmanager (Debian ships amtool in it)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)


def test_alertmanager_config_is_valid_and_routes_critical_alerts() -> None:
    result = amtool("check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    route = amtool("config", "routes", "test", "--config.file=alertmanager.yml", "severity=critical")
    assert route.returncode == 0 and route.stdout.strip() == "default", route.stdout + route.stderr


def test_alerts_name_only_jobs_the_scrape_config_has() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    named = {
        job
        for _, group in rule_groups()
        for rule in group["rules"]
        for matcher in re.findall(r'job[!=]~?"([^"]+)"', rule["expr"])
        for job in matcher.split("|")
    }
    assert named and named <= jobs
