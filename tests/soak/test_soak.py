"""`make soak`'s judge (tools/soak.py): the growth rule on made-up series, then a short real soak."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.real import require_binary
from tools.soak import GROWTH_RULES, judge_growth, warmup_s

MB = 2**20
RSS = GROWTH_RULES["rss_bytes"]


def series(minutes: float, start: float, per_hour: float, noise: float = 0.0, seed: int = 0):
    rng = random.Random(seed)
    times = [10.0 * i for i in range(int(minutes * 6) + 1)]
    return times, [start + per_hour * t / 3600 + rng.uniform(-noise, noise) for t in times]


def test_a_steady_leak_fails_and_a_flat_series_passes() -> None:
    times, leaking = series(60, 40 * MB, per_hour=30 * MB, noise=0.5 * MB)
    assert not judge_growth(times, leaking, warmup_s(3600), RSS)["ok"]
    times, flat = series(60, 40 * MB, per_hour=0, noise=0.5 * MB)
    assert judge_growth(times, flat, warmup_s(3600), RSS)["ok"]


def test_warm_up_growth_and_one_outlier_do_not_fail() -> None:
    times, values = series(60, 40 * MB, per_hour=0, noise=0.2 * MB)
    values = [v + (20 * MB * min(1, t / 120)) for t, v in zip(times, values, strict=True)]  # first 2 min
    values[200] += 50 * MB  # one odd sample late in the run
    verdict = judge_growth(times, values, warmup_s(3600), RSS)
    assert verdict["ok"], verdict


def test_a_short_run_fails_only_past_the_floor() -> None:
    times, noisy = series(2, 40 * MB, per_hour=0, noise=1 * MB, seed=3)  # a steep-looking slope from noise
    assert judge_growth(times, noisy, warmup_s(120), RSS)["ok"]
    times, leaking = series(2, 40 * MB, per_hour=400 * MB)  # +13 MB in 2 minutes
    assert not judge_growth(times, leaking, warmup_s(120), RSS)["ok"]
    fds = [11.0] * 9 + [14.0] * 4  # three descriptors more half-way, and kept
    assert not judge_growth([10.0 * i for i in range(13)], fds, warmup_s(120), GROWTH_RULES["fds"])["ok"]


def test_too_few_samples_is_a_failure_not_a_pass() -> None:
    assert not judge_growth([0.0, 10.0, 20.0], [1.0, 1.0, 1.0], 0.0, RSS)["ok"]


@pytest.mark.real
@pytest.mark.slow
def test_a_short_soak_is_flat_and_exact(tmp_path: Path) -> None:
    require_binary("prometheus", "apt-get install prometheus; `make test` does it as root")
    result = subprocess.run(
        [sys.executable, "tools/soak.py", "--duration", "90s", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert summary["ok"] and summary["accounting"]["views"]["loadgen"]["requests"] > 100
    rows = (tmp_path / "resources.csv").read_text().splitlines()
    assert rows[0] == "elapsed_s,process,pid,rss_bytes,fds,threads" and len(rows) > 30
