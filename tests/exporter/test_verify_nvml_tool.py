"""tools/verify_nvml.py runs on a GPU machine; here: its comparison rules and its failure without a GPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("verify_nvml", ROOT / "tools" / "verify_nvml.py")
assert spec is not None and spec.loader is not None
verify_nvml = importlib.util.module_from_spec(spec)
sys.modules["verify_nvml"] = verify_nvml  # dataclasses look their module up there
spec.loader.exec_module(verify_nvml)

GPU = {"gpu": "0", "uuid": "GPU-1"}


def check(field: str) -> object:
    return next(c for c in verify_nvml.checks() if c.field == field)


def series(name: str, value: float, **labels: str) -> dict:
    return {name: [({**GPU, **labels}, value)]}


def test_numbers_agree_within_tolerance_in_nvidia_smi_units() -> None:
    used = series("gpu_memory_used_bytes", 1139 * 2**20)
    assert verify_nvml.compare(check("memory.used"), "1139", used, GPU).agree
    assert not verify_nvml.compare(check("memory.used"), "1639", used, GPU).agree  # v1 "used" incl. reserved
    sm = series("gpu_clock_hertz", 1485e6, clock="sm")
    row = verify_nvml.compare(check("clocks.sm"), "1485", sm, GPU)
    assert row.agree and row.ours == "1485" and row.unit == "MHz"
    util = series("gpu_utilization_ratio", 0.99)
    assert verify_nvml.compare(check("utilization.gpu"), "100", util, GPU).agree
    assert not verify_nvml.compare(check("utilization.gpu"), "40", util, GPU).agree


def test_enumerations_and_missing_values() -> None:
    assert verify_nvml.compare(check("pstate"), "P0", series("gpu_performance_state", 0), GPU).agree
    assert not verify_nvml.compare(check("pstate"), "P8", series("gpu_performance_state", 0), GPU).agree
    reason = series("gpu_clock_event_reason_active", 1, reason="sw_power_cap")
    assert verify_nvml.compare(check("clocks_event_reasons.sw_power_cap"), "Active", reason, GPU).agree
    both_missing = verify_nvml.compare(check("fan.speed"), "[N/A]", {}, GPU)
    assert both_missing.agree and both_missing.note == "both n/a"
    assert not verify_nvml.compare(check("fan.speed"), "40", {}, GPU).agree
    assert not verify_nvml.compare(
        check("temperature.memory"), "[N/A]", series("gpu_memory_temperature_celsius", 70), GPU
    ).agree
    table = verify_nvml.table("t", [verify_nvml.Row("f", "1", "2", "W", False)])
    assert "| f | 1 | 2 | W | **NO** |" in table


def test_without_a_gpu_it_says_why_and_exits_2(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\nprintf \'"uuid"\\n"memory.total"\\n\'\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "verify_nvml.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "verify_nvml: cannot complete" in result.stderr
    assert "Traceback" not in result.stderr


def test_gpm_rows_expect_activity_on_hopper_and_accept_absence_before() -> None:
    busy = {"gpu_sm_active_ratio": [(GPU, 0.95)], "gpu_tensor_active_ratio": [(GPU, 0.92)]}
    assert all(r.agree for r in verify_nvml.gpm_rows(busy, GPU, "NVIDIA H100 80GB HBM3"))
    idle = {"gpu_sm_active_ratio": [(GPU, 0.01)], "gpu_tensor_active_ratio": [(GPU, 0.0)]}
    assert not any(r.agree for r in verify_nvml.gpm_rows(idle, GPU, "NVIDIA H100 80GB HBM3"))
    assert all(r.agree for r in verify_nvml.gpm_rows({}, GPU, "NVIDIA A100-SXM4-80GB"))
    assert not any(r.agree for r in verify_nvml.gpm_rows({}, GPU, "NVIDIA H200"))
