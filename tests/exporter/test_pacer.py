"""The Pacer foresees Prometheus's scrapes and says when background readers should read (a fake clock)."""

from __future__ import annotations

import threading
import time

import pytest

from exporter.pacer import IDLE_SECONDS, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrapes(pacer: Pacer, clock: Clock, times: list[float]) -> None:
    for at in times:
        clock.now = at
        pacer.scraped()


def test_one_scraper_every_15_s_gets_one_pass_just_before_each_scrape() -> None:
    clock = Clock()
    pacer = Pacer(max_age=1.0, clock=clock)
    scrapes(pacer, clock, [1000.0, 1015.0, 1030.0])
    assert pacer.period == pytest.approx(15.0)
    clock.now = 1030.01  # the pass for this scrape ran just now; the next is due 0.1 s before 1045
    assert pacer.due(lead=0.1, last=1030.0) == pytest.approx(1044.9)
    clock.now = 1044.9
    assert pacer.due(lead=0.1, last=1044.9) == pytest.approx(1059.9)  # that pass serves 1045, not 1060


def test_scrapes_more_often_than_the_age_bound_get_a_pass_per_bound_not_per_scrape() -> None:
    clock = Clock()
    pacer = Pacer(max_age=1.0, clock=clock)
    scrapes(pacer, clock, [1000.0 + 0.2 * i for i in range(10)])  # last at 1001.8
    assert pacer.period == pytest.approx(0.2)
    last = 1001.8
    clock.now = last + 0.01
    due = pacer.due(lead=0.05, last=last)
    assert due is not None and 0.8 <= due - last <= 1.0  # the scrapes up to 0.9 s after it are served


def test_two_scrapers_with_an_offset_each_get_their_pass() -> None:
    clock = Clock()
    pacer = Pacer(max_age=1.0, clock=clock)
    scrapes(pacer, clock, sorted([1000.0, 1015.0, 1030.0, 1004.0, 1019.0, 1034.0]))
    assert pacer.period == pytest.approx(15.0)
    clock.now = 1034.01
    assert pacer.due(lead=0.1, last=1034.0) == pytest.approx(1044.9)  # before the first one's next
    clock.now = 1044.91
    assert pacer.due(lead=0.1, last=1044.9) == pytest.approx(1048.9)  # then the second one's


def test_without_a_period_passes_come_every_three_quarters_of_the_bound() -> None:
    clock = Clock()
    pacer = Pacer(max_age=1.0, clock=clock)
    scrapes(pacer, clock, [1000.0, 1003.0, 1011.0])  # irregular: no interval repeats
    assert pacer.period is None
    clock.now = 1011.1
    assert pacer.due(lead=0.1, last=1011.0) == pytest.approx(1011.75)


def test_nobody_scrapes_no_passes() -> None:
    clock = Clock()
    pacer = Pacer(max_age=1.0, clock=clock)
    assert pacer.due(lead=0.1, last=None) is None and not pacer.active()
    scrapes(pacer, clock, [1000.0, 1015.0, 1030.0])
    clock.now = 1030.0 + 3 * 15 + 1  # three periods without a scrape
    assert pacer.due(lead=0.1, last=1030.0) is None and not pacer.active()
    scrapes(pacer, clock, [1000.0, 1001.0])
    clock.now = 1001.0 + IDLE_SECONDS + 1  # at least IDLE_SECONDS, however short the period
    assert pacer.due(lead=0.1, last=1001.0) is None


def test_a_slow_reader_is_held_to_its_spacing() -> None:
    clock = Clock()
    pacer = Pacer(max_age=1.0, clock=clock)
    scrapes(pacer, clock, [1000.0 + 0.2 * i for i in range(10)])
    clock.now = 1001.85
    due = pacer.due(lead=0.6, last=1001.8, min_spacing=5.0)
    assert due == pytest.approx(1006.8)


def test_wait_ends_at_its_time_at_the_next_scrape_when_idle_and_on_stop() -> None:
    pacer = Pacer(max_age=1.0)
    stop = threading.Event()
    started = time.monotonic()
    pacer.wait(time.monotonic() + 0.2, stop)
    assert 0.15 <= time.monotonic() - started < 2.0
    waiter = threading.Thread(target=pacer.wait, args=(None, stop))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()
    pacer.scraped()
    waiter.join(2)
    assert not waiter.is_alive()
    waiter = threading.Thread(target=pacer.wait, args=(None, stop))
    waiter.start()
    stop.set()
    pacer.wake()
    waiter.join(2)
    assert not waiter.is_alive()
