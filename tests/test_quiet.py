"""Settled successes counted in the C engine (``scheduler.Quiet``): what they leave in the health
book and the metrics is what reporting each one would have left, and a failure still shows.

The extension must have been built (``pip install -e .`` builds it)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence

from healthd.checkspec import CheckTiming, ProbeResult, Reason, Target, TcpCheck
from healthd.config import parse_text
from healthd.histogram import Histogram
from healthd.metrics import Metrics, Sources
from healthd.probes.native import QuietCount
from healthd.scheduler import Quiet, Scheduler
from healthd.state import HealthBook, ProbeKey, Subscriber

CONFIG = """
control: {enabled: false}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp, rise: 2}]
    real_servers:
      - {name: a, address: 192.168.1.1, port: 80}
"""


def ok(duration_s: float = 0.001) -> ProbeResult:
    return ProbeResult(True, Reason.OK, "TCP connect 192.168.1.1:80: connected", duration_s)


def test_a_check_is_settled_once_its_health_is_confirmed_and_its_result_repeats() -> None:
    book = HealthBook.from_config(parse_text(CONFIG, "t.yaml"))
    (key,) = book.probes
    refused = ProbeResult(False, Reason.REFUSED, "TCP connect 192.168.1.1:80: refused", 0.0)
    book.record(key, refused)
    assert not book.settled(key, ok())  # down: a success would count towards rise
    book.record(key, ok())
    assert not book.settled(key, ok())  # one of rise 2
    book.record(key, ok())
    assert book.settled(key, ok(0.004))  # up, confirmed: only the duration would change
    stranger = ProbeKey(TcpCheck(), Target("10.9.9.9", 1), CheckTiming(1.0, 0.5))
    counted = [
        (key, QuietCount(5, 0.02, (5,), 1.7e9, 0.004)),
        (stranger, QuietCount(1, 0.1, (1,), 1.7e9, 0.1)),
    ]
    noted = list(book.note_durations(counted))
    assert [count.n for _, count in noted] == [5]  # the stranger is not in the book
    assert book.last_result(key) == ok(0.004)


def test_counted_successes_show_as_the_same_successes_reported_one_by_one() -> None:
    cfg = parse_text(CONFIG, "t.yaml")
    durations = [0.0004, 0.0004, 0.003, 0.02, 0.02, 0.02, 0.4]
    one_by_one, counted = (_metrics(cfg) for _ in range(2))
    subscribers = [Subscriber("web", "a", "tcp")]
    for d in durations:
        one_by_one.observe_probe(subscribers, ok(d))
    buckets = Histogram(one_by_one.duration_buckets)
    for d in durations:
        buckets.observe(d)
    counted.observe_successes(subscribers, len(durations), sum(durations), buckets.counts, 1.7e9)
    assert _checks(counted) == _checks(one_by_one)


async def test_the_scheduler_counts_settled_successes_and_hands_them_over() -> None:
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    key = ProbeKey(TcpCheck(), Target("127.0.0.1", server.getsockname()[1]), CheckTiming(0.02, 0.2))
    reported: list[ProbeResult] = []
    counted: list[QuietCount] = []
    delays: list[int] = []

    def on_delays(counts: Sequence[int], n: int, total_s: float) -> None:
        delays.append(n)

    order: list[str] = []

    def on_counted(pairs: Sequence[tuple[ProbeKey, QuietCount]]) -> None:
        for _, count in pairs:
            counted.append(count)
            order.append("counted")

    def on_result(k: ProbeKey, result: ProbeResult) -> None:
        reported.append(result)
        order.append("reported")

    quiet = Quiet(
        settled=lambda k, result: result.ok,
        counted=on_counted,
        delays=on_delays,
        duration_bounds=(0.001, 0.5),
    )
    scheduler = Scheduler([key], on_result, quiet=quiet)
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(0.1)
        progress = scheduler.last_progress
        await asyncio.sleep(0.3)
        assert len(reported) == 1  # the first success; the rest counted
        assert scheduler.last_progress > progress + 0.2  # the watchdog sees them, undrained
        scheduler.drain()
        n = sum(c.n for c in counted)
        assert n >= 5 and sum(delays) == n
        assert scheduler.completed == 1 + n
        await asyncio.sleep(0.2)  # more successes counted, not drained
        before = sum(c.n for c in counted)
        server.close()  # refused from now on: each failure is reported
        await wait_reported(reported, 2)
        # what was counted before the failure was handed over before it, not after
        assert sum(c.n for c in counted) > before and order[-1] == "reported"
        await asyncio.sleep(0.15)
        assert len(reported) >= 3 and not any(r.ok for r in reported[1:])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
    assert scheduler.completed == len(reported) + sum(c.n for c in counted)


async def wait_reported(reported: list[ProbeResult], n: int) -> None:
    for _ in range(200):
        if len(reported) >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"fewer than {n} results reported")


def _checks(metrics: Metrics) -> bytes:
    """The per-check families of the exposition (not the process's own figures)."""
    text = b"".join(metrics.exposition())
    return text[text.index(b"# HELP healthd_check_attempts_total") :]


def _metrics(cfg: object) -> Metrics:
    sources = Sources(
        config=lambda: cfg,  # type: ignore[arg-type,return-value]
        status=dict,
        states=dict,
        desired=dict,
        observed=dict,
    )
    return Metrics(sources, wall=lambda: 1.7e9, mono=lambda: 0.0)
