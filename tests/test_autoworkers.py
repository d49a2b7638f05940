"""probes.workers: auto: probes stay in the daemon's process until it is busy, then move to one
worker process, and to more only when that one falls behind for want of CPU; results flow
throughout and none is delivered twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import pytest
from probing import tcp_key, until

from healthd.autoworkers import AutoScheduler
from healthd.checkspec import CheckTiming, HttpCheck, ProbeResult, Reason, Target
from healthd.histogram import DELAY_BUCKETS_S, Histogram
from healthd.scheduler import ResultFn, Scheduler
from healthd.state import ProbeKey
from healthd.workers import DelayBatchFn, WorkerPool


def busy_clock(share: float) -> Callable[[], float]:
    """A CPU clock that says the process used ``share`` of a core all along."""
    start = time.monotonic()
    return lambda: share * (time.monotonic() - start)


class Seen:
    def __init__(self) -> None:
        self.ports: list[int] = []
        self.ok: list[bool] = []

    def __call__(self, key: ProbeKey, result: ProbeResult) -> None:
        self.ports.append(key.target.port)
        self.ok.append(result.ok)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_busy_daemon_moves_its_probes_to_workers(listener: int, refused_port: int) -> None:
    seen = Seen()
    auto = AutoScheduler(
        [tcp_key(listener, 0.05)],
        seen,
        cpus=2,
        cpu_clock=busy_clock(0.9),
        window_s=0.2,
        engine_threads=0,  # never the engine's threads: workers
    )
    inline = auto._current
    task = asyncio.create_task(auto.run())
    try:
        await until(lambda: len(seen.ports) >= 3)
        assert auto.workers == 0  # still in this process during the first (busy) window
        await until(lambda: auto.workers == 1)
        pool = auto._current
        assert isinstance(pool, WorkerPool)
        assert len(auto.shares) == 2 and all(0.85 < s < 0.95 for s in auto.shares)
        moved_at = auto.completed
        inline_done = inline.completed
        await until(lambda: auto.completed >= moved_at + 5)  # the workers' results arrive
        pids = pool.pids()
        assert len(pids) == 1 and os.getpid() not in pids
        assert inline.completed == inline_done  # the in-process probes stopped: no doubles
        # a reload reaches the workers
        auto.update([tcp_key(listener, 0.05), tcp_key(refused_port, 0.05)])
        await until(lambda: refused_port in seen.ports)
        refused = [ok for port, ok in zip(seen.ports, seen.ok, strict=True) if port == refused_port]
        assert not any(refused) and all(
            ok for port, ok in zip(seen.ports, seen.ok, strict=True) if port == listener
        )
        # the real worker is nearly idle and on time: it stays alone
        await until(lambda: len(auto.worker_windows) == 2)
        assert auto.workers == 1 and auto._current is pool
        assert all(w.busiest_share < 0.5 for w in auto.worker_windows)
    finally:
        await stop(task)
    await until(lambda: all(w.proc is None for w in pool._workers))  # stopping stops them


async def test_a_busy_daemon_moves_the_engines_checks_to_its_threads(
    listener: int, refused_port: int
) -> None:
    """Mostly checks the C engine runs: the first move takes them to the engine's threads in
    this process, not to a worker process, and it is the last move."""
    from healthd import _tcpengine  # noqa: F401  (built: an ImportError fails the test)

    seen = Seen()
    auto = AutoScheduler(
        [tcp_key(listener, 0.05), tcp_key(refused_port, 0.05)],
        seen,
        cpus=3,
        cpu_clock=busy_clock(0.9),
        thread_clock=busy_clock(0.9),  # still busy after: no second move
        window_s=0.1,
    )
    inline = auto._current
    task = asyncio.create_task(auto.run())
    try:
        await until(lambda: auto.engine_threads > 0)
        assert auto.engine_threads == 2 and auto.workers == 0  # 3 CPUs: one left to the loop
        threaded = auto._current
        assert type(threaded) is Scheduler and threaded is not inline
        moved_at, inline_done = auto.completed, inline.completed
        await until(lambda: auto.completed >= moved_at + 10)  # from the threads now
        assert inline.completed == inline_done  # the loop's engine stopped: no doubles
        ok = {port: ok for port, ok in zip(seen.ports, seen.ok, strict=True)}
        assert ok == {listener: True, refused_port: False}
        await asyncio.sleep(0.5)  # five busy windows more
        assert auto._current is threaded and auto.workers == 0
    finally:
        await stop(task)


async def test_a_busy_daemon_moves_checks_run_in_python_to_a_worker(refused_port: int) -> None:
    key = ProbeKey(
        HttpCheck(expect_body="ok"),  # reads the body: run in Python, not by the engine
        Target("127.0.0.1", refused_port),
        CheckTiming(0.05, 0.025),
    )
    auto = AutoScheduler([key], Seen(), cpus=2, cpu_clock=busy_clock(0.9), window_s=0.1)
    task = asyncio.create_task(auto.run())
    try:
        await until(lambda: auto.workers == 1)
        assert auto.engine_threads == 0
    finally:
        await stop(task)


@pytest.mark.parametrize(
    ("cpus", "share"),
    [(2, 0.0), (2, 0.3), (1, 1.0)],
    ids=["idle", "a third of a core", "busy on one cpu"],
)
async def test_the_probes_stay_in_a_quiet_daemon_or_on_one_cpu(
    listener: int, cpus: int, share: float
) -> None:
    seen = Seen()
    auto = AutoScheduler(
        [tcp_key(listener, 0.05)], seen, cpus=cpus, cpu_clock=busy_clock(share), window_s=0.05
    )
    task = asyncio.create_task(auto.run())
    try:
        await asyncio.sleep(0.5)  # ten windows
        assert auto.workers == 0 and type(auto._current) is Scheduler
        assert len(seen.ports) >= 5 and all(seen.ok)
    finally:
        await stop(task)


@pytest.mark.parametrize("late", [False, True], ids=["on schedule", "starts late"])
async def test_a_busy_daemon_moves_only_when_its_probes_start_late(
    listener: int, late: bool
) -> None:
    """At 70 % of a core the probes stay in the daemon's process while they start on time (a
    worker would cost more CPU per check); once they start over 100 ms late, they move."""
    seen = Seen()

    def on_result(key: ProbeKey, result: ProbeResult) -> None:
        seen(key, result)
        if late:
            time.sleep(0.12)  # a loop this slow starts the other probe 120 ms late

    keys = [tcp_key(listener, 0.05), tcp_key(listener, 0.051)]
    auto = AutoScheduler(
        keys, on_result, cpus=2, cpu_clock=busy_clock(0.7), window_s=0.3, engine_threads=0
    )
    task = asyncio.create_task(auto.run())
    try:
        if late:
            await until(lambda: auto.workers == 1, timeout_s=5.0)
            assert all(w.late_fraction > 0.1 for w in auto.daemon_windows)
        else:
            await asyncio.sleep(1.5)  # five windows
            assert auto.workers == 0 and type(auto._current) is Scheduler
            assert len(auto.daemon_windows) == 2
            assert all(w.late_fraction == 0.0 for w in auto.daemon_windows)
    finally:
        await stop(task)


class LatePool(WorkerPool):
    """Stands in for the worker processes: every 20 ms, a result per probe and a batch of
    schedule delays, all ``delay_s`` late."""

    def __init__(
        self, keys: list[ProbeKey], on_result: ResultFn, workers: int, on_delays: DelayBatchFn,
        delay_s: float,
    ) -> None:  # fmt: skip
        super().__init__(keys, on_result, workers=workers, on_delays=on_delays)
        self.delay_s = delay_s

    def pids(self) -> list[int]:
        return [100_000 + i for i in range(self.workers)]

    async def run(self) -> None:
        delays = Histogram(DELAY_BUCKETS_S)
        while True:
            await asyncio.sleep(0.02)
            for key in self._keys:
                self.completed += 1
                self._on_result(key, ProbeResult(True, Reason.OK, "connected", 0.001))
                delays.observe(self.delay_s)
            assert self._on_delays is not None
            self._on_delays(delays.counts, delays.count, delays.total)
            delays = Histogram(DELAY_BUCKETS_S)


@pytest.mark.parametrize(
    ("worker_share", "delay_s", "grows"),
    [(0.95, 0.3, True), (0.95, 0.0, False), (0.2, 0.3, False)],
    ids=["busy and late", "busy, on time", "late, not busy"],
)
async def test_a_worker_behind_its_schedule_for_want_of_cpu_gets_company(
    listener: int, worker_share: float, delay_s: float, grows: bool
) -> None:
    seen = Seen()
    merged: list[int] = []
    pools: list[LatePool] = []
    worker_clock = busy_clock(worker_share)

    def pool(keys: list[ProbeKey], workers: int, on_delays: DelayBatchFn) -> WorkerPool:
        pools.append(LatePool(keys, seen, workers, on_delays, delay_s))
        return pools[-1]

    auto = AutoScheduler(
        [tcp_key(listener, 0.05)],
        seen,
        on_delays=lambda counts, count, total: merged.append(count),
        cpus=2,
        cpu_clock=busy_clock(0.9),
        pid_cpu=lambda pid: worker_clock(),
        window_s=0.1,
        pool=pool,
        engine_threads=0,
    )
    task = asyncio.create_task(auto.run())
    try:
        await until(lambda: auto.workers == 1)
        await until(lambda: len(auto.worker_windows) == 2 or auto.workers == 2)
        await asyncio.sleep(0.3)  # three more windows
        assert [p.workers for p in pools] == ([1, 2] if grows else [1])
        assert auto.workers == (2 if grows else 1)
        assert sum(merged) > 0  # the workers' delays still reach the daemon's metrics
        done = auto.completed
        await until(lambda: auto.completed > done)  # results keep coming
    finally:
        await stop(task)
