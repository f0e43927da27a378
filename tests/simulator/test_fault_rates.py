"""Fault settings between 0 and 1 produce about the configured frequency. Statistical, with fixed seeds
(the simulator draws every fault from seeded generators, so each count below is the same on every run)
and tolerances of three or more standard deviations around the expected count."""

from __future__ import annotations

import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from simulator.engine import Engine, VirtualClock
from simulator.faults import Faults
from simulator.profile import load_profile
from simulator.server import Simulator

TINY = load_profile("tiny")


def plans(faults: Faults, seed: int, requests: int) -> tuple[int, int, int]:
    """How many of `requests` arrivals get a stall, a drop, and both."""
    engine = Engine(TINY, faults, seed=seed)
    sim = Simulator([engine], TINY.model, faults, seed=seed)
    stalls = drops = both = 0
    for index in range(requests):
        assert sim.injected_error() is None  # drawn first for every request, as in Simulator.admit
        plan = sim.fault_plan(engine.add(f"r{index}", [index + 1] * 20, 30, ignore_eos=True))
        stalls += plan.stall_at is not None
        drops += plan.drop_at is not None
        both += plan.stall_at is not None and plan.drop_at is not None
        assert plan.stall_at in (None, 15) and plan.drop_at in (None, 15)  # half-way through 30 tokens
    return stalls, drops, both


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("stall", "drop"), [(0.3, 0.1), (0.05, 0.5), (0.9, 0.02)])
def test_stall_and_drop_probabilities_give_their_share_of_requests(
    seed: int, stall: float, drop: float
) -> None:
    requests = 4000
    stalls, drops, both = plans(
        Faults(stall_probability=stall, stall_seconds=1, drop_probability=drop), seed, requests
    )
    for count, p in [(stalls, stall), (drops, drop), (both, stall * drop)]:  # drawn independently
        expected = requests * p
        spread = (requests * p * (1 - p)) ** 0.5
        assert abs(count - expected) <= max(4 * spread, 5), (count, expected)


def test_zero_and_one_are_never_and_always() -> None:
    assert plans(Faults(stall_probability=1, stall_seconds=1, drop_probability=0), 0, 200) == (200, 0, 0)
    assert plans(Faults(stall_probability=0, drop_probability=1), 0, 200) == (0, 200, 0)


@pytest.mark.parametrize(("per_minute", "spike_seconds"), [(6.0, 2.0), (60.0, 0.5)])
def test_latency_spikes_come_at_the_configured_rate_of_busy_time(
    per_minute: float, spike_seconds: float
) -> None:
    # Spikes come per minute of engine busy time (an idle engine takes no steps), at most one per step:
    # a step of modelled cost c spikes with probability 1 - exp(-rate x c). Steps of the tiny profile at
    # ten times its cost (about 0.1 to 0.2 s) for 200 busy minutes: about 1,200 or 12,000 spikes.
    clock = VirtualClock()
    faults = Faults(spike_per_minute=per_minute, spike_seconds=spike_seconds)
    engine = Engine(TINY.with_time_scale(10.0), faults, seed=7, clock=clock)
    rate = per_minute / 60
    names = itertools.count()
    spikes, busy, expected, variance = 0, 0.0, 0.0, 0.0
    while busy < 200 * 60:
        while engine.num_running + engine.num_waiting < 4:  # four users, one after another
            engine.add(f"r{next(names)}", [next(names) + 1] * 40, 100, ignore_eos=True)
        batch, seconds = engine.begin_step(clock())
        spiked = seconds >= spike_seconds  # a step without a spike costs well under 0.5 s
        modelled = seconds - spike_seconds if spiked else seconds
        chance = 1 - math.exp(-rate * modelled)
        spikes += spiked
        busy += modelled
        expected += chance
        variance += chance * (1 - chance)
        clock.advance(seconds)
        engine.end_step(batch, clock())
    assert abs(spikes - expected) <= 4 * variance**0.5, (spikes, expected)
    # Roughly the configured rate: exact while steps are short against the gap between spikes; at 60
    # a minute (one a second) and 0.15 s steps, two spikes in one step count once, about 7 % fewer.
    assert spikes / (busy / 60) == pytest.approx(per_minute, rel=0.1)


def test_stalls_and_drops_reach_the_client_at_their_rates(start_simulator) -> None:
    # 100 streams, 8 at a time: about 20 dropped (p = 0.2) and, of the rest, about a quarter stalled
    # for 1 s half-way (p = 0.25, drawn independently; a dropped stream closes before it would stall).
    url = start_simulator("--profile", "tiny", "--seed", "3", "--stall", "0.25:1", "--drop", "0.2")
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "ignore_eos": True,
        "stream": True,
    }

    def one(_: int) -> str:
        times, events = [], []
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        times.append(time.monotonic())
                        events.append(line[6:])
        except httpx.RemoteProtocolError:
            assert "[DONE]" not in events
            return "dropped"
        assert events[-1] == "[DONE]"
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        return "stalled" if max(gaps) >= 0.9 else "clean"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(100)))
    assert 8 <= outcomes.count("dropped") <= 32, outcomes  # expected 20
    assert 6 <= outcomes.count("stalled") <= 34, outcomes  # expected 0.25 x 80 = 20
