"""probes.workers: auto: probes stay in the daemon's process until it is busy, then move to
worker processes once, with results flowing throughout and none delivered twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import pytest
from probing import tcp_key, until

from healthd.autoworkers import AutoScheduler
from healthd.checkspec import ProbeResult
from healthd.scheduler import Scheduler
from healthd.state import ProbeKey
from healthd.workers import WorkerPool


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
    )
    inline = auto._current
    task = asyncio.create_task(auto.run())
    try:
        await until(lambda: len(seen.ports) >= 3)
        assert auto.workers == 0  # still in this process during the first (busy) window
        await until(lambda: auto.workers == 2)
        pool = auto._current
        assert isinstance(pool, WorkerPool)
        assert len(auto.shares) == 2 and all(0.85 < s < 0.95 for s in auto.shares)
        moved_at = auto.completed
        inline_done = inline.completed
        await until(lambda: auto.completed >= moved_at + 5)  # the workers' results arrive
        pids = [w.proc.pid for w in pool._workers if w.proc is not None]
        assert len(pids) == 2 and os.getpid() not in pids
        assert inline.completed == inline_done  # the in-process probes stopped: no doubles
        # a reload reaches the workers
        auto.update([tcp_key(listener, 0.05), tcp_key(refused_port, 0.05)])
        await until(lambda: refused_port in seen.ports)
        refused = [ok for port, ok in zip(seen.ports, seen.ok, strict=True) if port == refused_port]
        assert not any(refused) and all(
            ok for port, ok in zip(seen.ports, seen.ok, strict=True) if port == listener
        )
    finally:
        await stop(task)
    await until(lambda: all(w.proc is None for w in pool._workers))  # stopping stops them


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
