"""The recheck of rate-limited ports against a simulated host: a token bucket like Linux's ICMP limit."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest

from sockscope.scan.engine import Found, Job, Stop, Timing
from sockscope.scan.recheck import recheck


class Bucket:
    """Linux's per-destination ICMP limit in small: `burst` tokens, one back every `period` seconds."""

    def __init__(self, period: float, burst: int) -> None:
        self.period, self.burst = period, burst
        self.tokens, self.last = 0.0, time.monotonic()  # the fast pass left it empty

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) / self.period)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def host(closed: set[int], bucket: Bucket | None) -> Callable[[Sequence[Job], Timing, Callable[[Found], None], Stop | None], None]:
    """An engine probing a host whose closed ports answer through `bucket` (None: without limit) and whose others are silent."""

    def engine(jobs: Sequence[Job], timing: Timing, report: Callable[[Found], None], stop: Stop | None) -> None:
        for job in jobs:
            if job.port in closed and (bucket is None or bucket.take()):
                report(Found(job.host, job.port, "closed", "port-unreach", 0.0001))
        time.sleep(timing.initial_timeout)
        for job in jobs:
            if job.port not in closed:
                report(Found(job.host, job.port, "open|filtered", "no-response", None))

    return engine


def _run(closed: set[int], silent: set[int], bucket: Bucket | None) -> tuple[dict[int, str], float]:
    heard: dict[int, str] = {}
    jobs = [Job(0, "192.0.2.1", 2, port) for port in sorted(closed | silent)]
    started = time.monotonic()
    recheck(host(closed | {9}, bucket), jobs, Job(0, "192.0.2.1", 2, 9), 0.002, lambda f: heard.__setitem__(f.port, f.state), "open|filtered")
    return heard, time.monotonic() - started


@pytest.mark.parametrize("burst", [1, 6])
def test_every_port_right_through_a_token_bucket(burst: int) -> None:
    closed, silent = set(range(100, 110)), set(range(200, 240))
    heard, seconds = _run(closed, silent, Bucket(0.05, burst))
    assert heard == {**dict.fromkeys(closed, "closed"), **dict.fromkeys(silent, "open|filtered")}
    # ten closed ports need about ten tokens, the silent ones a few more (one a group): not hundreds
    assert seconds < 40 * 0.05, seconds


def test_without_a_limit_it_ends_at_once() -> None:
    closed, silent = set(range(100, 105)), set(range(200, 300))
    heard, seconds = _run(closed, silent, None)
    assert heard == {**dict.fromkeys(closed, "closed"), **dict.fromkeys(silent, "open|filtered")}
    assert seconds < 0.5, seconds


def test_a_sentinel_that_falls_silent_ends_it() -> None:
    heard: dict[int, str] = {}
    jobs = [Job(0, "192.0.2.1", 2, port) for port in range(200, 205)]
    started = time.monotonic()
    recheck(host(set(), None), jobs, Job(0, "192.0.2.1", 2, 9), 0.002, lambda f: heard.__setitem__(f.port, f.state), "filtered")
    assert heard == dict.fromkeys(range(200, 205), "filtered") and time.monotonic() - started < 10
