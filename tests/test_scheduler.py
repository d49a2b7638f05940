"""The scheduler with scripted probes: cadence, stagger, timeouts by cancellation, bounds."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time

from healthd.checkspec import CheckSpec, CheckTiming, ProbeResult, Reason, Target, TcpCheck
from healthd.scheduler import Scheduler
from healthd.state import ProbeKey


def key(port: int, interval_s: float = 0.1, timeout_s: float = 0.05) -> ProbeKey:
    return ProbeKey(TcpCheck(), Target("127.0.0.1", port), CheckTiming(interval_s, timeout_s))


def ok(spec: CheckSpec, target: Target) -> ProbeResult:
    return ProbeResult(True, Reason.OK, spec.describe(target), 0.0)


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_each_probe_runs_once_per_interval() -> None:
    seen: list[tuple[int, float]] = []

    async def probe(spec: CheckSpec, target: Target) -> ProbeResult:
        seen.append((target.port, time.monotonic()))
        return ok(spec, target)

    keys = [key(1), key(2)]
    results: list[ProbeKey] = []
    s = Scheduler(keys, lambda k, r: results.append(k), probe=probe, jitter=0.0)
    await run_for(s, 1.05)
    for port in (1, 2):
        times = [t for p, t in seen if p == port]
        assert 9 <= len(times) <= 11  # 1 s at a 100 ms interval, after a stagger < 100 ms
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) > 0.08
    assert len(results) == len(seen)


async def test_first_runs_are_staggered_over_the_interval() -> None:
    starts: list[float] = []

    async def probe(spec: CheckSpec, target: Target) -> ProbeResult:
        starts.append(time.monotonic())
        return ok(spec, target)

    keys = [key(p, interval_s=1.0, timeout_s=0.5) for p in range(1, 41)]
    s = Scheduler(keys, lambda k, r: None, probe=probe, rng=random.Random(7))
    t0 = time.monotonic()
    await run_for(s, 1.0)
    offsets = sorted(t - t0 for t in starts)
    assert len(offsets) >= 35
    assert offsets[0] < 0.2 and offsets[-1] > 0.7  # spread, not a burst at t=0


async def test_hung_probe_is_cancelled_at_its_timeout_and_reported() -> None:
    cancelled = asyncio.Event()

    async def hang(spec: CheckSpec, target: Target) -> ProbeResult:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    s = Scheduler([], lambda k, r: None, probe=hang)
    t0 = time.monotonic()
    result = await s.probe_once(key(1, interval_s=1.0, timeout_s=0.1))
    assert 0.09 < time.monotonic() - t0 < 0.5
    assert cancelled.is_set()
    assert not result.ok and result.reason is Reason.TIMEOUT
    assert "timed out" in result.detail
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


async def test_a_probe_that_raises_is_a_failure_not_a_crash() -> None:
    async def broken(spec: CheckSpec, target: Target) -> ProbeResult:
        raise ValueError("bug in a probe")

    got: list[ProbeResult] = []
    s = Scheduler([key(1)], lambda k, r: got.append(r), probe=broken, jitter=0.0)
    await run_for(s, 0.35)
    assert len(got) >= 2  # it kept running after the first failure
    assert all(not r.ok and r.reason is Reason.ERROR and "bug in a probe" in r.detail for r in got)


async def test_concurrency_is_bounded() -> None:
    active = 0
    peak = 0

    async def slow(spec: CheckSpec, target: Target) -> ProbeResult:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.04)
        active -= 1
        return ok(spec, target)

    keys = [key(p, interval_s=0.1, timeout_s=0.09) for p in range(1, 51)]
    s = Scheduler(keys, lambda k, r: None, probe=slow, max_concurrent=5)
    await run_for(s, 0.5)
    assert peak == 5


class FirstRunsAt(random.Random):
    """First runs at this fraction of each probe's interval (no stagger), no jitter."""

    def __init__(self, fraction: float) -> None:
        super().__init__(7)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


async def run_behind(s: Scheduler, seen: list[int], holds: list[tuple[float, int]]) -> None:
    """Run ``s``; after its first run, hold it (nothing starts: it falls behind) until each
    ``(until_s, then_seen)``'s time from the start, then let it run until ``seen`` has that many."""
    t0 = time.monotonic()
    task = asyncio.create_task(s.run())
    try:
        while not seen:
            await asyncio.sleep(0.001)
        for until_s, then_seen in holds:
            s.hold(True)
            await asyncio.sleep(t0 + until_s - time.monotonic())
            s.hold(False)
            while len(seen) < then_seen:
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failed_probes_retry_goes_before_a_backlog_of_healthy_probes() -> None:
    """Behind schedule (here: held), the retry of a probe that failed, due one interval after
    the failed run began, starts before the healthy probes that were due earlier."""
    order: list[int] = []
    started: list[float] = []

    async def probe(spec: CheckSpec, target: Target) -> ProbeResult:
        order.append(target.port)
        started.append(time.monotonic())
        if target.port == 1:
            return ProbeResult(False, Reason.REFUSED, "refused", 0.0)
        return ok(spec, target)

    failing = key(1, interval_s=0.3, timeout_s=0.1)  # first run at 0.006 s, retry at ~0.306 s
    healthy = [key(p, interval_s=10.0, timeout_s=0.1) for p in range(100, 200)]  # at 0.2 s
    s = Scheduler([failing, *healthy], lambda k, r: None, probe=probe, rng=FirstRunsAt(0.02))
    await run_behind(s, order, [(0.45, 102)])  # nothing starts from the first run to 0.45 s
    assert order[:2] == [1, 1], order[:5]
    assert sorted(order[2:102]) == list(range(100, 200))
    assert started[1] - started[0] >= 0.29  # one interval after the failed run, not sooner


async def test_until_rise_successes_after_a_failure_a_probe_stays_ahead_of_the_backlog() -> None:
    """rise 2: after the failure and the first success, the second success is still started on
    its interval, before healthy probes that were due earlier."""
    order: list[int] = []
    calls = 0

    async def probe(spec: CheckSpec, target: Target) -> ProbeResult:
        nonlocal calls
        order.append(target.port)
        if target.port == 1:
            calls += 1
            if calls == 1:
                return ProbeResult(False, Reason.REFUSED, "refused", 0.0)
        return ok(spec, target)

    flapping = key(1, interval_s=0.3, timeout_s=0.1)  # rise 2; runs at ~0.006, 0.306, 0.756
    early = [key(p, interval_s=10.0, timeout_s=0.1) for p in range(100, 150)]  # due at 0.2
    late = [key(p, interval_s=27.5, timeout_s=0.1) for p in range(200, 250)]  # due at 0.55
    s = Scheduler([flapping, *early, *late], lambda k, r: None, probe=probe, rng=FirstRunsAt(0.02))
    await run_behind(s, order, [(0.45, 52), (0.9, 103)])
    assert order[:2] == [1, 1] and order[52] == 1, order[50:55]
    assert calls == 3


async def test_cancelling_the_scheduler_leaves_no_task() -> None:
    async def slow(spec: CheckSpec, target: Target) -> ProbeResult:
        await asyncio.sleep(10)
        return ok(spec, target)

    s = Scheduler([key(p, 1.0, 0.5) for p in range(10)], lambda k, r: None, probe=slow)
    await run_for(s, 0.3)
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


async def test_update_starts_new_probes_stops_removed_ones_and_keeps_the_rest() -> None:
    seen: list[int] = []

    async def probe(spec: CheckSpec, target: Target) -> ProbeResult:
        seen.append(target.port)
        return ok(spec, target)

    s = Scheduler([key(1), key(2)], lambda k, r: None, probe=probe, jitter=0.0)
    task = asyncio.create_task(s.run())
    await asyncio.sleep(0.35)
    assert s.update([key(2), key(3)]) == (1, 1)
    seen.clear()
    await asyncio.sleep(0.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert 1 not in seen
    assert seen.count(2) >= 4 and seen.count(3) >= 3
