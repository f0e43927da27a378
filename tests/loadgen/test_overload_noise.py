"""The open-loop overload detector against random arrivals: a stable queue is never called overloaded,
however its backlog moves with Poisson or bursty arrivals, and a mild overload is called once its
backlog outgrows that noise. A queue of `servers` slots, each request `service_s` (+-20 %), fed the
arrivals the load generator draws (schedules.arrival_offsets), read once a second as the runner does.
"""

from __future__ import annotations

import heapq
import random

from loadgen.overload import Overload, OverloadDetector, Reading
from loadgen.schedules import Phase, arrival_offsets


def queue_run(
    rate: float, servers: int, service_s: float, seconds: int, seed: int, burstiness: float = 1.0
) -> Overload | None:
    rng = random.Random(seed)
    arrival = "poisson" if burstiness == 1.0 else "gamma"
    phase = Phase(name="p", rate=rate, arrival=arrival, burstiness=burstiness)
    arrivals = []
    for offset in arrival_offsets(phase, rng):
        if offset > seconds:
            break
        arrivals.append(offset)
    free = [0.0] * servers
    ends = []
    for at in arrivals:
        end = max(heapq.heappop(free), at) + service_s * rng.uniform(0.8, 1.2)
        heapq.heappush(free, end)
        ends.append(end)
    detector = OverloadDetector(dispersion=1 / burstiness)
    for second in range(1, seconds + 1):
        finished = sum(1 for end in ends if end <= second)
        sent = sum(1 for at in arrivals if at <= second)
        e2es = sorted(end - at for at, end in zip(arrivals, ends, strict=True) if end <= second)
        fastest = e2es[len(e2es) // 10] if e2es else None
        detector.add(Reading(second, finished, sent - finished, rate), fastest)
    return detector.overload


def test_a_stable_queue_is_never_called_overloaded() -> None:
    # 3 slots of 0.7 s answer 4.3 requests/s; before, 2 requests/s (47 %) was called overloaded in 68 of
    # 300 steps of 25 s, and a rate sweep stopped there
    for rate in (2.0, 3.0, 3.5):
        called = [seed for seed in range(100) if queue_run(rate, 3, 0.7, 25, seed)]
        assert called == [], f"{rate} requests/s"
    assert not any(queue_run(4.0, 3, 0.7, 120, seed) for seed in range(30))  # 93 %, two minutes
    assert not any(queue_run(3.0, 3, 0.7, 120, seed, burstiness=0.25) for seed in range(30))


def test_a_marked_overload_is_called_at_once_and_a_mild_one_in_time() -> None:
    marked = [queue_run(8.0, 3, 0.7, 25, seed) for seed in range(30)]
    assert all(found is not None and found.detected_s <= 20 for found in marked)
    assert all(found.achieved_rate < 0.6 * found.offered_rate for found in marked if found)
    mild = [queue_run(5.0, 3, 0.7, 120, seed) for seed in range(30)]  # 17 % past capacity
    assert sum(found is not None for found in mild) >= 15
