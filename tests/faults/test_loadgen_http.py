"""The load generator's own HTTP server (/metrics, /healthz, the control API) against slow, idle and
oversized clients, over real sockets: `loadgen serve` with its default limits (a request must be in
within 10 s of when its connection began waiting for it, 256 connections, 1 MiB bodies).
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.faults import checks, clients
from tests.faults.stack import Proc, loadgen_serve

CLOSED = "loadgen_http_connections_closed_total"
HEAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\nUser-Agent: slow\r\n\r\n"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(fault_tmp) -> Proc:
    with loadgen_serve(fault_tmp) as proc:
        yield proc


def test_500_slow_or_silent_clients_neither_stop_metrics_nor_take_the_file_descriptors(served: Proc) -> None:
    # uvicorn alone gave a new connection no deadline and reset its keep-alive timer on every byte: these
    # 500 held 500 descriptors for as long as they trickled (all still open after 20 s), and a few
    # thousand would have taken every descriptor the process has, its connections to the engine too.
    before, start = checks.scrape(served.metrics_url), served.resources()
    idle = clients.timed_scrapes(served.metrics_url, 10)
    with (
        clients.SlowClients(served.port, 400, HEAD, interval=1.0) as slow,
        clients.idle_connections(served.port, 100) as silent,
    ):
        time.sleep(1.5)
        during = served.resources()
        under_attack = clients.timed_scrapes(served.metrics_url, 10)
        slow.wait_all_closed(timeout=20)
        assert all(clients.closed_by_peer(sock, 15) for sock in silent)
    latency = clients.percentile(under_attack, 50), clients.percentile(idle, 50)
    assert latency[0] < 3 * latency[1] + 0.05, (idle, under_attack)
    assert during.fds < start.fds + 256 + 10, (start, during)  # the cap, not one per client
    # Closed by the deadline on the whole request (or evicted at the cap), not when the client stops.
    assert max(slow.closed_after.values()) < 16.0
    after = checks.scrape(served.metrics_url)
    closed = sum(
        after.value(CLOSED, {"reason": r}) - before.value(CLOSED, {"reason": r})
        for r in ("request_timeout", "evicted")
    )
    assert closed >= 500 and after.value(CLOSED, {"reason": "refused"}) == before.value(
        CLOSED, {"reason": "refused"}
    )
    checks.assert_alive(served)
    checks.wait_until(lambda: served.resources().fds <= start.fds + 5, 10, "file descriptors not given back")


def test_a_body_over_the_budget_is_refused_before_the_app_reads_it(served: Proc) -> None:
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    answer = httpx.post(f"{served.url}/runs", content=big, timeout=10)
    assert answer.status_code == 413
    chunked = httpx.post(f"{served.url}/runs", content=iter([big[:1_000_000], big[1_000_000:]]), timeout=10)
    assert chunked.status_code == 413  # no Content-Length: counted as it comes
    assert httpx.get(f"{served.url}/runs", timeout=5).status_code == 200
    checks.assert_alive(served)
