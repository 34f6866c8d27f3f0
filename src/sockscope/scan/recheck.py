"""Silent ports of a host that rate-limits its ICMP errors, asked again at the pace of the limit.

Linux sends ICMP port unreachable (a closed UDP port; a TCP port behind a firewall's `reject`)
through a token bucket per destination: a burst of about 6, then one every
net.ipv4.icmp_ratelimit (1 s by default; ICMPv6 has its own). A fast scan drains the bucket
in its first milliseconds, and every closed port after that looks silent: open|filtered (UDP)
or filtered (TCP). Retries sent milliseconds apart do not help, the bucket is still empty.

So, after the fast pass, a host with both answered and silent ports is asked again. One of its
ports that answered with ICMP before (the sentinel) ends every group of silent ports sent
again: when the sentinel answers, the bucket still held a token after the ports before it, so
those that stayed silent are silent indeed. When it does not, the group's silent ports go back
in line and the next group waits for the bucket to refill; its period is learnt from the gaps
between answers. Groups grow while they stay silent and shrink when they answer: a closed port
costs one period (the kernel allows no faster), a silent one a share of a group's round trip.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from .engine import Found, Job, Stop, Stopped, Timing

Engine = Callable[[Sequence[Job], Timing, Callable[[Found], None], Stop | None], None]

_LONGEST = 3.0  # a period longer than this is not worth waiting for (Linux's default is 1 s)


def _probe(engine: Engine, jobs: Sequence[Job], wait: float, stop: Stop | None) -> dict[int, Found]:
    """Probe `jobs` once each, waiting `wait` for answers; give the answers by port."""
    heard: dict[int, Found] = {}
    fixed = Timing(concurrency=max(1, len(jobs)), initial_timeout=wait, min_timeout=wait, max_timeout=wait, retries=0)

    def keep(found: Found) -> None:
        if found.reason != "no-response":
            heard[found.port] = found

    engine(jobs, fixed, keep, stop)
    return heard


def recheck(
    engine: Engine,
    silent: Sequence[Job],
    sentinel: Job,
    wait: float,
    report: Callable[[Found], None],
    silent_state: str,
    stop: Stop | None = None,
) -> bool:
    """Ask one host's silent ports again, each group when its ICMP limit has a token; report every one. Give True when limited.

    `sentinel` is a port of the same host that answered with ICMP (port unreachable) before. It
    ends every group: when it answers, the bucket still held a token after the ports before it,
    so those that stayed silent are silent indeed. When it does not, the group's silent ports go
    back in line and the next group waits for the bucket to refill (its period is learnt from the
    gaps between answers).
    """
    pending = deque(silent)
    size, limited = 1, False
    period: float | None = None  # the time between two tokens, once seen
    coarse = True  # until two answers in a row are found by small steps, the period is a rough guess
    last_answer = time.monotonic()
    last_precise = False  # the last answer came within a small step of its token's return
    empty_rounds = 0
    safe = True  # this round does not start near the moment a token comes back
    coarse_step = True  # the empty rounds before this one were spaced by doubling waits
    rounds_left = 8 * len(silent) + 100  # a bound, whatever the host does
    while pending:
        if stop is not None and stop():
            raise Stopped
        rounds_left -= 1
        if rounds_left < 0:
            return _give_up(pending, report, silent_state, limited)
        group = [pending.popleft() for _ in range(min(size, len(pending)))]
        heard = _probe(engine, [*group, sentinel], wait, stop)
        now = time.monotonic()
        sentinel_heard = heard.pop(sentinel.port, None) is not None
        for found in heard.values():
            report(found)
        quiet = [job for job in group if job.port not in heard]
        # Near a refill, a token may come back between a silent port's probe and the sentinel's:
        # only a round that started away from that moment proves its silent ports silent.
        if sentinel_heard and safe:
            for job in quiet:
                report(Found(job.host, job.port, silent_state, "no-response", None))
            size = min(512, size * 2)
        else:
            limited = limited or not sentinel_heard
            pending.extendleft(reversed(quiet))
            size = max(1, size // 2) if heard and not sentinel_heard else size  # closed ports among them: smaller groups
        if heard or sentinel_heard:
            # An answer found by small steps after an empty bucket came within a step of its token;
            # the gap between two such answers is one period, give or take a step (a bucket that
            # kept part of a token makes a shorter gap, so other gaps only give a first guess).
            precise = bool(empty_rounds) and period is not None and not coarse_step
            gap = now - last_answer
            if empty_rounds and period is None:
                period = gap
            elif precise and last_precise:
                period = gap if coarse else max(period or 0.0, gap)
                coarse = False
            last_answer, last_precise, empty_rounds = now, precise, 0
            # no empty bucket seen yet: rounds are nowhere near a refill (a port that answers without limit)
            safe = period is None
            if pending and period is not None:  # the bucket may be empty: sleep until a token is back
                pause = period * 0.5 if coarse else period * 1.025 + 0.005
                time.sleep(max(0.0, last_answer + pause - time.monotonic()))
                safe = not coarse
            continue
        empty_rounds += 1
        safe = False
        elapsed = now - last_answer
        if elapsed > _LONGEST:
            return _give_up(pending, report, silent_state, limited)
        # near the next token: small steps; before any period is known: double the wait
        coarse_step = period is None
        time.sleep(max(wait, period / 40) if period is not None else max(wait, elapsed))
    return limited


def _give_up(pending: deque[Job], report: Callable[[Found], None], silent_state: str, limited: bool) -> bool:
    """The sentinel no longer answers (its port changed, a firewall appeared), or the rounds ran out: leave the rest silent."""
    for job in pending:
        report(Found(job.host, job.port, silent_state, "no-response", None))
    return limited
