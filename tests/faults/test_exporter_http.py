"""The exporter's HTTP server against slow, idle, oversized and malformed clients, over real sockets.

The process cases run the real exporter (scraping a simulator) with its default limits (a request must
be in within 10 s of its first byte, 512 connections); the in-process cases shorten the idle and write
timeouts through ServerLimits to keep the suite fast.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from exporter.http_protocol import ServerLimits
from exporter.server import ExporterServer
from tests.faults import checks, clients
from tests.faults.stack import Proc

CLOSED = "exporter_http_connections_closed_total"
HEAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\nUser-Agent: slow\r\n\r\n"

pytestmark = pytest.mark.slow


def test_500_slow_heads_neither_delay_scrapes_nor_outlive_the_request_deadline(exp: Proc) -> None:
    before, start = checks.scrape(exp.metrics_url), exp.resources()
    idle = clients.timed_scrapes(exp.metrics_url, 10)
    with clients.SlowClients(exp.port, 500, HEAD, interval=1.0) as slow:
        time.sleep(1.5)  # every connection has begun its head (and has 10 s to finish it)
        assert checks.scrape(exp.metrics_url).value("exporter_http_connections_open") >= 500
        under_attack = clients.timed_scrapes(exp.metrics_url, 10)
        slow.wait_all_closed(timeout=20)
    # Scrapes are answered at once (the unpatched server answered none); the ratio is the benchmark's.
    assert clients.percentile(under_attack, 50) < 3 * clients.percentile(idle, 50) + 0.05, (
        idle,
        under_attack,
    )
    # Closed by the whole-head deadline (10 s from the first byte), not after 10 s of silence per read.
    assert min(slow.closed_after.values()) >= 9.0 and max(slow.closed_after.values()) < 16.0
    checks.wait_counter_increase(exp.metrics_url, before, CLOSED, {"reason": "request_timeout"}, 500)
    checks.assert_alive(exp)
    checks.wait_until(lambda: exp.resources().fds <= start.fds + 5, 10, "file descriptors not given back")
    checks.assert_bounded(start, exp.resources(), rss_mb=30, fds=5, threads=4)


def test_a_trickled_body_is_cut_at_the_same_deadline(exp: Proc) -> None:
    before = checks.scrape(exp.metrics_url)
    head = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", exp.port), timeout=20) as raw:
        started = time.monotonic()
        raw.sendall(head)
        with contextlib.suppress(ConnectionError):
            while time.monotonic() - started < 20:
                raw.sendall(b"x")
                time.sleep(0.5)
                if raw.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                    break
    assert 9.0 <= time.monotonic() - started < 13.0
    checks.wait_counter_increase(exp.metrics_url, before, CLOSED, {"reason": "request_timeout"})
    checks.assert_alive(exp)


@pytest.mark.parametrize("blank", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_blank_lines_trickled_before_a_request_do_not_restart_its_deadline(exp: Proc, blank: bytes) -> None:
    # Blank lines may precede a request-line (RFC 9112 2.2) and are dropped, but they are the request's
    # first bytes: one every second must not keep a connection open past the 10 s deadline (it once did,
    # for ever: each blank line, once dropped, restarted the deadline).
    before = checks.scrape(exp.metrics_url)
    with clients.SlowClients(exp.port, 20, blank * 40, interval=1.0) as slow:
        slow.wait_all_closed(timeout=20)
    assert min(slow.closed_after.values()) >= 9.0 and max(slow.closed_after.values()) < 16.0
    checks.wait_counter_increase(exp.metrics_url, before, CLOSED, {"reason": "request_timeout"}, 20)
    checks.assert_alive(exp)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /metrics HTTP/1.1\nHost: x\nConnection: close\n\n",
        b"GET /metrics HTTP/1.0\n\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\nConnection: close\r\n\n",  # mixed
        b"\r\n\nGET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",  # empty lines before it (RFC 9112 2.2)
    ],
)
def test_bare_lf_requests_are_answered_at_once(exp: Proc, request_bytes: bytes) -> None:
    started = time.monotonic()
    answer = clients.raw_exchange(exp.port, request_bytes, timeout=5)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"llm_target_up" in answer
    assert time.monotonic() - started < 2.0


def test_500_idle_connections_leave_scrapes_served(exp: Proc) -> None:
    with clients.idle_connections(exp.port, 500):
        time.sleep(1.1)  # the served snapshot is at most --collect-interval-seconds (1 s) old
        assert checks.scrape(exp.metrics_url).value("exporter_http_connections_open") >= 500
        clients.timed_scrapes(exp.metrics_url, 10)  # each answered (a failure raises)
    checks.wait_until(
        lambda: checks.scrape(exp.metrics_url).value("exporter_http_connections_open") <= 2, 10, "not closed"
    )
    checks.assert_alive(exp)


def test_beyond_the_connection_cap_the_longest_waiting_make_room(exp: Proc) -> None:
    before = checks.scrape(exp.metrics_url)
    with clients.idle_connections(exp.port, 600) as idle:
        time.sleep(0.5)
        clients.timed_scrapes(exp.metrics_url, 10)  # each answered (a failure raises)
        evicted = [sock for sock in idle[:100] if clients.closed_by_peer(sock, 2)]
    assert len(evicted) >= 85  # 600 + the scraper's connection - 512, the oldest first
    checks.wait_counter_increase(exp.metrics_url, before, CLOSED, {"reason": "evicted"}, 85)
    checks.assert_alive(exp)


def test_400_clients_pipelining_without_reading_leave_scrapes_at_their_usual_latency(exp: Proc) -> None:
    # Each sends 100 requests per write and reads nothing. Before, each pipelined request went to the
    # workers' queue as a scrape does (scrapes took 0.1-0.5 s behind them), and a busy connection could
    # not be evicted. Now pipelined requests take at most 2 workers at once, and a connection answers at
    # most 16 in a row before it is closed.
    before = checks.scrape(exp.metrics_url)
    idle = clients.timed_scrapes(exp.metrics_url, 10)
    start = exp.resources()
    with clients.PipelineFlood(exp.port, 400, "/healthz", per_write=100) as flood:
        time.sleep(2.0)
        under_flood = clients.timed_scrapes(exp.metrics_url, 10)
        during = exp.resources()
    assert clients.percentile(under_flood, 50) < 3 * clients.percentile(idle, 50) + 0.05, (idle, under_flood)
    assert flood.connects > 400  # closed at the pipelining budget, so they had to reconnect
    checks.wait_counter_increase(exp.metrics_url, before, CLOSED, {"reason": "pipelined"}, 400)
    checks.assert_alive(exp)
    # What a connection holds is a head and one 16 KiB read ahead, whatever its client sends.
    assert during.rss_bytes - start.rss_bytes < 60 * 2**20, (start, during)
    checks.wait_until(lambda: exp.resources().fds <= start.fds + 5, 10, "file descriptors not given back")


def test_beyond_the_cap_pipelining_clients_make_room_and_no_scrape_is_refused(exp: Proc) -> None:
    # 600 such clients for 512 slots: each busy with a request, none could be evicted, so every new
    # connection, a scrape's too, was refused for as long as they kept sending. A client that does not
    # wait for its answers is now the first to make room, before a new connection whose request is still
    # coming in.
    before = checks.scrape(exp.metrics_url)
    with clients.PipelineFlood(exp.port, 600, "/healthz", per_write=100):
        time.sleep(2.0)
        under_flood = clients.timed_scrapes(exp.metrics_url, 10, timeout=5)  # each answered (or raises)
    after = checks.scrape(exp.metrics_url)
    assert after.value(CLOSED, {"reason": "refused"}) == before.value(CLOSED, {"reason": "refused"})
    assert after.value(CLOSED, {"reason": "evicted"}) - before.value(CLOSED, {"reason": "evicted"}) >= 88
    assert clients.percentile(under_flood, 50) < 1.0, under_flood  # churn at the cap costs the loop
    checks.assert_alive(exp)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X-Many: b\r\n" * 7_000 + b"\r\n", b"431"),
        (b"A" * 1_000_000, b"431"),  # no line end at all: cut at 64 KiB, not read to the end
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\r\n\r\n", b"400"),  # TLS hello
        (b"\x00\xff\xfe garbage \x80\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/9.9\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n0123456789", b"400"),  # int() took it
        (b"GET /metrics HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", b"400"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 3\r\n\r\nabc", b"400"),
    ],
    ids=[
        "long-header",
        "many-headers",
        "no-newline",
        "tls-hello",
        "binary",
        "version",
        "header",
        "neg",
        "big",
        "length-underscore",
        "length-sign",
        "length-twice",
    ],
)
def test_oversized_and_malformed_requests_get_an_answer_and_a_count(
    exp: Proc, request_bytes: bytes, status: bytes
) -> None:
    before = checks.scrape(exp.metrics_url)
    with contextlib.suppress(ConnectionResetError):  # closed while unread bytes were still coming
        answer = clients.raw_exchange(exp.port, request_bytes, timeout=5)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
    checks.wait_counter_increase(exp.metrics_url, before, CLOSED, {"reason": "bad_request"})
    assert httpx.get(exp.metrics_url, timeout=5).status_code == 200
    checks.assert_alive(exp)


# In-process: the same server class with short timeouts, and an app whose answer is large.


def big_app(environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    sizes = {"/big": 64 * 2**20, "/large": 8 * 2**20}
    return [b"x" * sizes.get(environ["PATH_INFO"], 10)]


@contextlib.contextmanager
def short_server(**limits: float) -> Iterator[ExporterServer]:
    server = ExporterServer(big_app, "127.0.0.1", 0, limits=ServerLimits(**limits)).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()


def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    with short_server(idle_timeout_seconds=0.5) as server, clients.idle_connections(server.port, 50) as idle:
        started = time.monotonic()
        assert all(clients.closed_by_peer(sock, 2) for sock in idle)
        assert time.monotonic() - started < 3
        checks.wait_until(lambda: server.closed_by_reason()["idle_timeout"] == 50, 5, "not counted")
        checks.wait_until(lambda: server.stats.open_connections() == 0, 5, "not forgotten")


def test_a_client_that_never_reads_its_answer_is_cut_at_the_write_deadline() -> None:
    with short_server(write_timeout_seconds=1.0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.sendall(b"GET /big HTTP/1.1\r\n\r\n")
            checks.wait_until(lambda: server.closed_by_reason()["write_timeout"] == 1, 15, "not cut")
        answer = httpx.get(f"http://127.0.0.1:{server.port}/small", timeout=5)
        assert answer.status_code == 200 and answer.content == b"x" * 10


def test_clients_reconnecting_as_fast_as_they_are_evicted_churn_among_themselves() -> None:
    with short_server(max_connections=20) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as kept:  # as Prometheus's
            request = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"
            assert clients.exchange_on(kept, request).startswith(b"HTTP/1.1 200 OK")
            with clients.ReconnectingIdle(server.port, 40) as churn:
                for _ in range(20):
                    time.sleep(0.05)
                    assert clients.exchange_on(kept, request).startswith(b"HTTP/1.1 200 OK")
            assert churn.reconnects > 20
        assert server.closed_by_reason()["evicted"] > 20


def test_clients_that_never_read_their_answers_cannot_hold_every_slot() -> None:
    # As many clients as the cap each ask for a large answer (or pipeline requests) and read nothing: their
    # writes stall, and they once stayed unevictable until the write deadline, so each new connection
    # (Prometheus's too) was refused for 30 s at a time. A stalled writer now makes room.
    limits = {"max_connections": 5, "write_timeout_seconds": 30.0}
    with short_server(**limits) as server:
        stalled = []
        try:
            for _ in range(5):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
                stalled.append(sock)
            checks.wait_until(lambda: server.stats.open_connections() == 5, 10, "not connected")
            time.sleep(1.0)  # each is answered and its 8 MiB write stalls at once
            answer = httpx.get(f"http://127.0.0.1:{server.port}/small", timeout=5)
            assert answer.status_code == 200 and answer.content == b"x" * 10
            assert server.closed_by_reason()["evicted"] == 1 and server.closed_by_reason()["refused"] == 0
        finally:
            for sock in stalled:
                sock.close()


def test_pipelined_requests_are_answered_in_order_up_to_the_budget_then_the_connection_closes() -> None:
    with short_server(max_pipelined_requests=4) as server:
        requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10))
        answers = clients.raw_exchange(server.port, requests, timeout=5).split(b"HTTP/1.1 ")[1:]
        assert len(answers) == 5  # the first, then 4 pipelined; the rest never read
        assert all(a.startswith(b"200 OK") for a in answers)
        assert b"Connection: close" in answers[-1] and b"Connection: keep-alive" in answers[-2]
        checks.wait_until(lambda: server.closed_by_reason()["pipelined"] == 1, 5, "not counted")


def test_a_client_that_waits_for_each_answer_is_never_held_to_the_pipelining_budget() -> None:
    with short_server(max_pipelined_requests=2) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as kept:
            for _ in range(20):
                answer = clients.exchange_on(kept, b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
                assert answer.startswith(b"HTTP/1.1 200 OK") and b"keep-alive" in answer
        assert server.closed_by_reason()["pipelined"] == 0


def test_requests_sent_before_the_client_half_closes_are_all_answered() -> None:
    with short_server() as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            raw.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := raw.recv(65536):
                received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 3  # then closed: the client will send no more


def test_at_the_cap_a_pipelining_connection_makes_room_before_a_new_one() -> None:
    with short_server(max_connections=2, max_pipelined_requests=10_000) as server:
        fresh = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # its request not in yet
        hurried = socket.socket()
        hurried.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        hurried.connect(("127.0.0.1", server.port))
        hurried.setblocking(False)
        hurried.send(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n" * 20_000)  # what fits; read never
        try:
            checks.wait_until(lambda: server.stats.open_connections() == 2, 5, "not connected")
            time.sleep(0.5)
            answer = clients.raw_exchange(server.port, b"GET /small HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 OK")
            assert _drained_to_close(hurried) and not clients.closed_by_peer(fresh, 2)
            assert server.closed_by_reason()["evicted"] == 1 and server.closed_by_reason()["refused"] == 0
        finally:
            fresh.close()
            hurried.close()


def _drained_to_close(sock: socket.socket) -> bool:
    """Whether the peer closed the socket, once the answers it holds are read."""
    sock.setblocking(True)
    sock.settimeout(2)
    try:
        while sock.recv(65536):
            pass
    except ConnectionError:
        pass
    except TimeoutError:
        return False
    return True
