"""Warm-up requests (loadgen --warmup) are in no rule, alert or panel: the load generator exports them in
series of their own labelled phase="warmup", so every selector of such a family must carry
phase!="warmup". promtool tests check a few rules with warm-up series beside measured ones; this checks
every selector, so a rule or panel added without the matcher fails here (removing it from any one of 20
recording rules once passed every promtool test)."""

from __future__ import annotations

from loadgen.metrics import LoadgenCollector, RunMetrics
from loadgen.warmup import WARMUP
from tests.stack.dashboards import all_queries, concrete, selectors
from tests.stack.promql import rule_groups


def warmup_families() -> set[str]:
    """The sample names the load generator exports for its warm-up too (phase="warmup")."""
    run = RunMetrics("s", "r", "m", "chat", "closed")
    run.start_warmup()
    collector = LoadgenCollector()
    collector.add(run)
    return {
        sample.name for family in collector.collect() for sample in family.samples
        if sample.labels.get("phase") == WARMUP
    }  # fmt: skip


def every_query() -> list[tuple[str, str]]:
    rules = [
        (f"{path.name}: {rule.get('record') or rule.get('alert')}", rule["expr"])
        for path, group in rule_groups()
        for rule in group["rules"]
    ]
    return rules + all_queries()


def test_the_warm_up_families_are_known() -> None:
    families = warmup_families()
    assert {"loadgen_requests_sent_total", "loadgen_dispatch_delay_seconds_bucket"} <= families
    assert "loadgen_phase_info" not in families  # the current phase: "warmup" is worth seeing there


def test_every_selector_of_a_warm_up_family_leaves_the_warm_up_out() -> None:
    families = warmup_families()
    missing = [
        (where, selector)
        for where, expr in every_query()
        for selector in selectors(concrete(expr))
        if selector.split("{")[0] in families and 'phase!="warmup"' not in selector.replace(" ", "")
    ]
    assert missing == []
    read = {s.split("{")[0] for _, expr in every_query() for s in selectors(concrete(expr))}
    assert len(read & families) >= 10  # the check saw the rules' and panels' loadgen selectors
