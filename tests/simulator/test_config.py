"""Profiles and fault settings: shipped files load; every bad value is a clear error at start."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from simulator.faults import FaultConfigError, parse_error_rate, parse_faults, parse_pair
from simulator.profile import PROFILES_DIR, ProfileError, available_profiles, load_profile, parse_profile


def test_shipped_profiles_load() -> None:
    assert {"rtx4090d-qwen3-4b-fp8", "h100-qwen3-4b", "tiny"} <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.name == name
        assert profile.kv_capacity_tokens >= profile.max_model_len


def base() -> dict:
    return yaml.safe_load((PROFILES_DIR / "tiny.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d.update(max_model_len=100000), "exceeds the KV cache"),
        (lambda d: d["cache"].update(block_size=0), "cache.block_size must be > 0"),
        (lambda d: d["cache"].update(colour="red"), "unknown keys ['colour']"),
        (lambda d: d["timing"].update(step_base_seconds="fast"), "timing.step_base_seconds must be float"),
        (lambda d: d["timing"].update(decode_per_seq_seconds=-1.0), "must be >= 0"),
        (lambda d: d["output"].update(min_tokens=10, max_tokens=5), "output.max_tokens"),
        (lambda d: d.pop("model"), "model must be a non-empty string"),
        (lambda d: d.update(scheduler=[1]), "scheduler must be a mapping"),
        (lambda d: d.update(speculative={"acceptance_rate": 2.0}), "acceptance_rate must be in [0, 1]"),
        (lambda d: d.update(reasoning={"max_tokens": 5, "field": "thoughts"}), "reasoning.field"),
        (lambda d: d["scheduler"].update(stream_interval=0), "stream_interval must be > 0"),
    ],
)
def test_bad_profiles_are_clear_errors(change, fragment: str) -> None:
    data = base()
    change(data)
    with pytest.raises(ProfileError) as error:
        parse_profile(data, source="p.yaml")
    assert fragment in str(error.value)


def test_unknown_profile_names_the_shipped_ones() -> None:
    with pytest.raises(ProfileError, match="tiny"):
        load_profile("no-such-profile")


def test_fault_file_parses() -> None:
    faults = parse_faults(
        {
            "errors": {500: 0.1, "429": 0.2},
            "latency_spike": {"per_minute": 6, "seconds": 1.5},
            "stall": {"probability": 0.05, "seconds": 3},
            "drop": {"probability": 0.01},
            "restart": {"every_seconds": 120, "down_seconds": 3},
        }
    )
    assert faults.error_rates == {500: 0.1, 429: 0.2}
    assert (faults.spike_per_minute, faults.spike_seconds) == (6, 1.5)
    assert (faults.stall_probability, faults.stall_seconds, faults.drop_probability) == (0.05, 3, 0.01)
    assert (faults.restart_every_seconds, faults.restart_down_seconds) == (120, 3)
    assert faults.any and not parse_faults({}).any


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"errors": {200: 0.1}}, "not an HTTP error status"),
        ({"errors": {500: 1.5}}, "probability"),
        ({"errors": {500: 0.6, 503: 0.6}}, "add up to more than 1"),
        ({"errors": {"five hundred": 0.1}}, "HTTP status codes"),
        ({"stall": {"probability": 0.1, "seconds": "long"}}, "must be a number"),
        ({"drop": {"chance": 0.1}}, "unknown keys"),
        ({"restart": {"every_seconds": 10, "down_seconds": 0}}, "down_seconds must be > 0"),
        ({"explode": True}, "unknown keys"),
    ],
)
def test_bad_faults_are_clear_errors(data: dict, fragment: str) -> None:
    with pytest.raises(FaultConfigError) as error:
        parse_faults(data)
    assert fragment in str(error.value)


def test_fault_flag_forms() -> None:
    assert parse_error_rate("503=0.25") == (503, 0.25)
    assert parse_pair("--stall", "0.1:2") == (0.1, 2.0)
    with pytest.raises(FaultConfigError, match="STATUS=PROBABILITY"):
        parse_error_rate("503")
    with pytest.raises(FaultConfigError, match="A:B"):
        parse_pair("--stall", "often")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--profile", "nope"], "profile 'nope' not found"),
        (["--error-rate", "500=2"], "errors.500 must be a probability"),
        (["--stall", "x"], "--stall 'x'"),
        (["--faults", "/no/such/file.yaml"], "cannot read fault file"),
        (["--port", "70000"], "not a TCP port"),
    ],
)
def test_cli_rejects_bad_settings_with_status_2(args: list[str], fragment: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert fragment in result.stderr
