"""``probes.workers: auto`` (the default): probes in the daemon's process until it gets busy.

``AutoScheduler`` runs the in-process ``Scheduler`` and samples the process's CPU time every
``WINDOW_S``; when ``workerpolicy.auto_workers`` says the probes need worker processes, it
stops the in-process scheduler and starts a ``WorkerPool`` with the same probes, once.  Health,
metrics and the reconciler see one scheduler throughout: results go to the same callbacks, and
``completed`` keeps counting across the move.

The move costs one gap per probe: the in-process probes stop, the workers start (a Python
start, ~0.3 s on a server) and stagger their first runs over one interval, as at start-up.  No
result is delivered twice, so ``fall``/``rise`` keep their meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable

from healthd.checkspec import ProbeResult
from healthd.scheduler import DelayFn, ResultFn, Scheduler
from healthd.state import ProbeKey
from healthd.workerpolicy import BUSY_WINDOWS, WINDOW_S, auto_workers
from healthd.workers import DelayBatchFn, WorkerPool

log = logging.getLogger("healthd.workers")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. systemd's CPUAffinity=)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class AutoScheduler:
    """The ``Scheduler`` interface; probes in this process, or in workers once it is busy."""

    def __init__(
        self,
        probes: Iterable[ProbeKey],
        on_result: ResultFn,
        *,
        max_concurrent: int = 1024,
        on_delay: DelayFn | None = None,
        on_delays: DelayBatchFn | None = None,
        cpus: int | None = None,
        cpu_clock: Callable[[], float] = time.process_time,
        window_s: float = WINDOW_S,
        pool: Callable[[list[ProbeKey], int], Scheduler] | None = None,
    ) -> None:
        self._keys = list(dict.fromkeys(probes))
        self._on_result = on_result
        self._max_concurrent = max_concurrent
        self._on_delays = on_delays
        self._cpus = usable_cpus() if cpus is None else cpus
        self._cpu_clock = cpu_clock
        self._window_s = window_s
        self._make_pool = pool or self._worker_pool
        self._current = Scheduler(
            self._keys, on_result, max_concurrent=max_concurrent, on_delay=on_delay
        )
        self._completed_before = 0  # by the schedulers that ran before the current one
        self._progress_before = self._current.last_progress
        self.workers = 0  # worker processes now (0: the daemon's own process)
        self.shares: list[float] = []  # the daemon's share of a core per window, while measured

    # ---- the Scheduler interface ------------------------------------------------------------

    @property
    def completed(self) -> int:
        return self._completed_before + self._current.completed

    @property
    def in_flight(self) -> int:
        return self._current.in_flight

    @property
    def last_progress(self) -> float:
        return max(self._progress_before, self._current.last_progress)

    def update(self, keys: Iterable[ProbeKey]) -> tuple[int, int]:
        self._keys = list(dict.fromkeys(keys))
        return self._current.update(self._keys)

    async def probe_once(self, key: ProbeKey) -> ProbeResult:
        return await self._current.probe_once(key)

    async def run(self) -> None:
        """Probe until cancelled: in this process, then (if it gets busy) in workers."""
        task = asyncio.create_task(self._current.run(), name="probes")
        try:
            wanted = await self._watch(task) if self._cpus >= 2 else 0
            if wanted:
                task = await self._move(task, wanted)
            await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- measuring and moving ---------------------------------------------------------------

    async def _watch(self, task: asyncio.Task[None]) -> int:
        """Sample this process's CPU per window until the probes need workers (or ``task``
        ends)."""
        loop = asyncio.get_running_loop()
        cpu, wall = self._cpu_clock(), loop.time()
        while True:
            done, _ = await asyncio.wait({task}, timeout=self._window_s)
            if done:
                return 0
            now_cpu, now = self._cpu_clock(), loop.time()
            self.shares = [*self.shares, (now_cpu - cpu) / max(now - wall, 1e-9)][-BUSY_WINDOWS:]
            cpu, wall = now_cpu, now
            wanted = auto_workers(self.shares, self._cpus)
            if wanted:
                return wanted

    async def _move(self, task: asyncio.Task[None], workers: int) -> asyncio.Task[None]:
        busy = " and ".join(f"{100 * s:.0f}%" for s in self.shares)
        log.warning(
            "probes: this process used %s of a core in the last %d windows of %gs: moving "
            "%d probes to %d worker processes (probes.workers: auto; %d CPUs usable)",
            busy,
            len(self.shares),
            self._window_s,
            len(self._keys),
            workers,
            self._cpus,
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._completed_before += self._current.completed
        self._progress_before = max(self._progress_before, self._current.last_progress)
        self._current = self._make_pool(self._keys, workers)
        self.workers = workers
        return asyncio.create_task(self._current.run(), name="probe-workers")

    def _worker_pool(self, keys: list[ProbeKey], workers: int) -> Scheduler:
        return WorkerPool(
            keys,
            self._on_result,
            workers=workers,
            max_concurrent=self._max_concurrent,
            on_delays=self._on_delays,
        )
