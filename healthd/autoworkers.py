"""``probes.workers: auto`` (the default): probes in the daemon's process until it gets busy,
then in one worker process, then (if one falls behind) in one per usable CPU; or, with
``probes.engine_threads: auto`` (the default) when most probes are the C engine's, the first
move keeps them in the daemon's process and runs the engine in threads of its own instead.

Why threads first for the engine's checks (docs/benchmarks.md): in the test VM at N = 5000 TCP
checks, the engine in one thread kept the schedule at 0.90x keepalived's CPU per check (the
probes in two worker processes: 1.11x), and the daemon held 72-79 MB in one process where the
workers made three processes of 128 MB.  Threads cost more per check when the daemon is not
busy (the results cross from one thread to the other: +9-19 % at 100-1 000 checks/s), hence
on the event loop until the daemon is busy.  The move to threads is the last one: the checks
left on the loop are the Python ones, and a worker would run the engine's checks on one core.

``AutoScheduler`` runs the in-process ``Scheduler`` and samples the process's CPU time every
``WINDOW_S``; when ``workerpolicy.first_move`` says so, it stops the in-process scheduler and
starts a ``WorkerPool`` of one worker with the same probes (or, see above, an in-process
``Scheduler`` with ``workerpolicy.engine_threads_for`` engine threads; from then on the window's
CPU is the event loop's thread's, ``time.thread_time``).  It then samples that worker's CPU
time (``/proc``) and the schedule delays the worker reports; when ``workerpolicy.more_workers``
says the worker is behind for want of CPU, it replaces the pool with a larger one, once.
Health, metrics and the reconciler see one scheduler throughout: results go to the same
callbacks, and ``completed`` keeps counting across the moves.

Each move costs one gap per probe: the running probes stop, the workers start (a Python start,
~0.3 s on a server) and stagger their first runs over one interval, as at start-up.  No result
is delivered twice, so ``fall``/``rise`` keep their meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

from healthd.checkspec import ProbeResult
from healthd.histogram import DELAY_BUCKETS_S, Histogram
from healthd.scheduler import DelayFn, DrainStep, Quiet, ResultFn, Scheduler
from healthd.state import ProbeKey
from healthd.workerpolicy import (
    BUSY_WINDOWS,
    LATE_S,
    WINDOW_S,
    WorkerWindow,
    engine_threads_for,
    first_move,
    late_fraction,
    late_starts,
    more_workers,
    to_engine_threads,
)
from healthd.workers import DelayBatchFn, WorkerPool

log = logging.getLogger("healthd.workers")


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User and system time of process ``pid`` so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. systemd's CPUAffinity=)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


PoolFactory = Callable[[list[ProbeKey], int, DelayBatchFn], WorkerPool]


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
        pid_cpu: Callable[[int], float] = process_cpu_seconds,
        window_s: float = WINDOW_S,
        pool: PoolFactory | None = None,
        quiet: Quiet | None = None,
        engine_threads: int | Literal["auto"] = "auto",
        thread_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self._keys = list(dict.fromkeys(probes))
        self._on_result = on_result
        self._max_concurrent = max_concurrent
        self._on_delays = on_delays
        self._cpus = usable_cpus() if cpus is None else cpus
        # probes.engine_threads: N from the start; auto: the first move may go to threads
        fixed = engine_threads if isinstance(engine_threads, int) else 0
        self._thread_move = engine_threads == "auto"
        self._thread_clock = thread_clock
        # with the engine in threads, what the event loop's thread does is what counts
        self._cpu_clock = thread_clock if fixed else cpu_clock
        self._pid_cpu = pid_cpu
        self._window_s = window_s
        self._make_pool = pool or self._worker_pool
        self._daemon_on_delay = on_delay
        self._starts = 0  # in-process probe starts, and those over LATE_S late, this window
        self._late_starts = 0
        self._quiet_delays = quiet.delays if quiet is not None else None
        self._pool_quiet = quiet  # the workers count quiet successes too (their delays: on_delays)
        # in this process, quiet successes' delays are counted in the windows too
        self._inline_quiet = (
            dataclasses.replace(quiet, delays=self._count_delays) if quiet else None
        )
        self._current: Scheduler = self._in_process(fixed)
        self._completed_before = 0  # by the schedulers that ran before the current one
        self._progress_before = self._current.last_progress
        self._window_delays = Histogram(DELAY_BUCKETS_S)  # the workers', this window
        self.workers = 0  # worker processes now (0: the daemon's own process)
        self.shares: list[float] = []  # the daemon's share of a core per window, while measured
        self.daemon_windows: list[WorkerWindow] = []  # with its late starts
        self.worker_windows: list[WorkerWindow] = []  # since the probes moved to one worker

    # ---- the Scheduler interface ------------------------------------------------------------

    @property
    def completed(self) -> int:
        return self._completed_before + self._current.completed

    @property
    def in_flight(self) -> int:
        return self._current.in_flight

    @property
    def engine_threads(self) -> int:
        return self._current.engine_threads

    @property
    def last_progress(self) -> float:
        return max(self._progress_before, self._current.last_progress)

    def update(self, keys: Iterable[ProbeKey]) -> tuple[int, int]:
        self._keys = list(dict.fromkeys(keys))
        return self._current.update(self._keys)

    async def probe_once(self, key: ProbeKey) -> ProbeResult:
        return await self._current.probe_once(key)

    async def run(self) -> None:
        """Probe until cancelled: in this process, then (if it gets busy) in one worker, then
        (if that one falls behind) in more."""
        task = asyncio.create_task(self._current.run(), name="probes")
        try:
            if self._cpus >= 2 and await self._watch_daemon(task):
                busy = " and ".join(
                    f"{100 * w.busiest_share:.0f}% of a core with {100 * w.late_fraction:.1f}% "
                    f"of starts over {LATE_S:g}s late"
                    for w in self.daemon_windows
                )
                why = (
                    f"this process used {busy} in the last {len(self.daemon_windows)} "
                    f"windows of {self._window_s:g}s"
                )
                share = self._current.engine_share
                if self._thread_move and to_engine_threads(share):
                    threads = engine_threads_for(self._cpus)
                    task = await self._to_threads(task, threads, share, why)
                    await task  # the last move
                    return
                task = await self._move(task, 1, why)
                wanted = await self._watch_worker(task)
                if wanted > 1:
                    late = " and ".join(
                        f"{100 * w.late_fraction:.1f}% of starts over {LATE_S:g}s late at "
                        f"{100 * w.busiest_share:.0f}% of a core"
                        for w in self.worker_windows
                    )
                    why = (
                        f"the probe worker fell behind in the last {len(self.worker_windows)} "
                        f"windows of {self._window_s:g}s ({late})"
                    )
                    task = await self._move(task, wanted, why)
            await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- measuring and moving ---------------------------------------------------------------

    async def _watch_daemon(self, task: asyncio.Task[None]) -> bool:
        """Sample this process's CPU per window until the probes need a worker (True) or
        ``task`` ends (False)."""
        loop = asyncio.get_running_loop()
        cpu, wall = self._cpu_clock(), loop.time()
        while True:
            done, _ = await asyncio.wait({task}, timeout=self._window_s)
            if done:
                return False
            now_cpu, now = self._cpu_clock(), loop.time()
            share = (now_cpu - cpu) / max(now - wall, 1e-9)
            late = self._late_starts / self._starts if self._starts else 0.0
            self._starts = self._late_starts = 0
            self.shares = [*self.shares, share][-BUSY_WINDOWS:]
            self.daemon_windows = [*self.daemon_windows, WorkerWindow(share, late)][-BUSY_WINDOWS:]
            cpu, wall = now_cpu, now
            if first_move(self.daemon_windows, self._cpus):
                return True

    def drain(self) -> None:
        self._current.drain()

    def drain_slices(self) -> Iterator[DrainStep]:
        return self._current.drain_slices()

    def _count_delays(self, counts: Sequence[int], n: int, total_s: float) -> None:
        """Quiet successes' delays, bucketed (``Quiet``): counted as ``_count_delay`` does."""
        self._starts += n
        self._late_starts += late_starts(counts, n)
        if self._quiet_delays is not None:
            self._quiet_delays(counts, n, total_s)

    def _count_delay(self, delay_s: float) -> None:
        self._starts += 1
        if delay_s > LATE_S:
            self._late_starts += 1
        if self._daemon_on_delay is not None:
            self._daemon_on_delay(delay_s)

    async def _watch_worker(self, task: asyncio.Task[None]) -> int:
        """Sample the worker's CPU and lateness per window until it needs company (the number
        of workers wanted) or ``task`` ends (1)."""
        loop = asyncio.get_running_loop()
        cpu, wall = self._workers_cpu(), loop.time()
        while True:
            self._window_delays = Histogram(DELAY_BUCKETS_S)
            done, _ = await asyncio.wait({task}, timeout=self._window_s)
            if done:
                return 1
            now_cpu, now = self._workers_cpu(), loop.time()
            elapsed = max(now - wall, 1e-9)
            shares = [(now_cpu[pid] - cpu[pid]) / elapsed for pid in now_cpu if pid in cpu]
            window = WorkerWindow(max(shares, default=0.0), late_fraction(self._window_delays))
            self.worker_windows = [*self.worker_windows, window][-BUSY_WINDOWS:]
            cpu, wall = now_cpu, now
            wanted = more_workers(self.worker_windows, self._cpus)
            if wanted > 1:
                return wanted

    def _workers_cpu(self) -> dict[int, float]:
        assert isinstance(self._current, WorkerPool)
        seconds = {}
        for pid in self._current.pids():
            with contextlib.suppress(OSError):  # exited meanwhile: the pool starts it again
                seconds[pid] = self._pid_cpu(pid)
        return seconds

    def _pool_delays(self, counts: Sequence[int], count: int, total: float) -> None:
        self._window_delays.merge(counts, count, total)
        if self._on_delays is not None:
            self._on_delays(counts, count, total)

    async def _move(self, task: asyncio.Task[None], workers: int, why: str) -> asyncio.Task[None]:
        log.warning(
            "probes: %s: moving %d probes to %d worker process%s "
            "(probes.workers: auto; %d CPUs usable)",
            why,
            len(self._keys),
            workers,
            "" if workers == 1 else "es",
            self._cpus,
        )
        await self._stop(task)
        self._current = self._make_pool(self._keys, workers, self._pool_delays)
        self.workers = workers
        return asyncio.create_task(self._current.run(), name="probe-workers")

    async def _to_threads(
        self, task: asyncio.Task[None], threads: int, share: float, why: str
    ) -> asyncio.Task[None]:
        assert isinstance(self._current, Scheduler)
        log.warning(
            "probes: %s: moving the C engine's checks (%.0f%% of %d probes) to %d thread%s of "
            "their own in this process (probes.engine_threads: auto; %d CPUs usable)",
            why,
            100 * share,
            len(self._keys),
            threads,
            "" if threads == 1 else "s",
            self._cpus,
        )
        await self._stop(task)
        self._current = self._in_process(threads)
        self._cpu_clock = self._thread_clock
        return asyncio.create_task(self._current.run(), name="probes")

    async def _stop(self, task: asyncio.Task[None]) -> None:
        """Stop the probes' current runner (``task``), keeping what it completed."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._completed_before += self._current.completed
        self._progress_before = max(self._progress_before, self._current.last_progress)

    def _in_process(self, engine_threads: int) -> Scheduler:
        return Scheduler(
            self._keys,
            self._on_result,
            max_concurrent=self._max_concurrent,
            on_delay=self._count_delay,
            quiet=self._inline_quiet,
            engine_threads=engine_threads,
        )

    def _worker_pool(
        self, keys: list[ProbeKey], workers: int, on_delays: DelayBatchFn
    ) -> WorkerPool:
        return WorkerPool(
            keys,
            self._on_result,
            workers=workers,
            max_concurrent=self._max_concurrent,
            on_delays=on_delays,
            quiet=self._pool_quiet,
        )
