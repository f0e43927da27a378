"""Settings are parsed once, at the edge, into typed values; every bad value is a LoadgenError."""

from __future__ import annotations

import math

import pytest

import loadgen
from loadgen import errors
from loadgen.client import Timeouts
from loadgen.errors import LoadgenError
from loadgen.scenario import INPUTS, Dataset, Scenario
from loadgen.workloads import LengthDist
from tests.support.error_tree import undrawn_errors

HOSTILE = (
    "x", "", -1, 0, 2**70, 1e400, float("nan"), True, [], {}, [1, "x"], {"a": 1}, "1,2,x", "nan", "inf",
    "-5s", [{}], [{"rate": "x"}], [{"concurrency": 1, "duration": []}], [{"concurrency": 1, "requests": "9"}],
)  # fmt: skip


def test_every_error_meant_for_people_has_one_root():
    for name in ("ScenarioError", "WorkloadError", "ClientError", "EventLoopError"):
        assert issubclass(getattr(errors, name), LoadgenError), name
    assert "LoadgenError" in errors.__doc__ and "EventLoopError" in errors.__doc__


def test_the_error_tree_in_the_docstring_names_every_subclass():
    assert not undrawn_errors(loadgen, LoadgenError)


@pytest.mark.parametrize("key", sorted(INPUTS))
def test_a_hostile_value_for_any_setting_is_a_clear_error(key):
    for value in HOSTILE:
        try:
            Scenario.build(None, {"url": "http://h:1", "requests": 3, key: value})
        except LoadgenError as exc:
            assert str(exc) and "Traceback" not in str(exc)


def test_values_are_typed_once():
    scenario = Scenario.build(None, {
        "url": "http://h:1", "rate": "2,4", "step_duration": "1m", "connect_timeout": "250ms",
        "read_timeout": 5, "grace": "2s", "input_len": "uniform:8:16", "output_len": "32",
        "dataset": "jsonl:p.jsonl", "slo": "ttft<=2s",
    })  # fmt: skip
    assert scenario.timeouts == Timeouts(connect_s=0.25, read_s=5.0, request_s=900.0)
    assert scenario.grace_s == 2.0 and scenario.slo_percentile == 95.0
    assert [(p.rate, p.duration_s) for p in scenario.phases] == [(2.0, 60.0), (4.0, 60.0)]
    assert scenario.shape == "open-steps" and len(scenario.run_id) == 8
    assert scenario.input_len == LengthDist("uniform", (8.0, 16.0))
    assert scenario.output_len == LengthDist("fixed", (32.0,))
    assert scenario.dataset == Dataset("jsonl", "p.jsonl")
    assert [str(slo) for slo in scenario.slos] == ["ttft<=2"]
    config = scenario.redacted()  # the report shows what was given
    assert config["connect_timeout"] == "250ms" and config["rate"] == "2,4" and config["seed"] == 0
    assert config["run_id"] == scenario.run_id
    assert math.isinf(Scenario.build(None, {"url": "http://h:1", "soak": True}).phases[0].duration_s)


def test_a_scenario_shares_no_mutable_default():
    first = Scenario.build(None, {"url": "http://h:1"})
    first.extra_body["x"] = 1  # type: ignore[index]
    assert Scenario.build(None, {"url": "http://h:1"}).extra_body == {} and INPUTS["extra_body"] == {}
