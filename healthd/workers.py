"""Probes in worker processes (``probes.workers: N``): the ``Scheduler`` interface, N processes.

When one core cannot run every probe on schedule, or the main event loop is busy with
reconcile passes and scrapes of a large config, the probes move to ``N`` worker processes
(``python -m healthd.probeworker``).  Each worker runs an ordinary ``Scheduler`` over its share of
the probes and sends results back in batches (a pickle per batch: within ``FLUSH_S`` of a result
that may change a verdict, within ``SETTLED_FLUSH_S`` of one that cannot, see
``probeworker._Batcher``); the
main process hands every result to the same callback as the in-process scheduler does, so health,
metrics and the reconciler do not know the difference.  Schedule delays come bucketed
(``healthd.histogram``, one histogram per batch) and go to ``on_delays`` in one call.

* Probes are spread over workers by count; a probe stays on its worker across ``update()``.
* A worker that dies is started again (after 1 s, then up to 30 s) with the same probes; its
  probes make no progress meanwhile, which the watchdog (``last_progress``) sees.
* A worker exits when its stdin closes, so it never outlives the daemon, even a killed one; its
  last batch (what it counted since its last drain) is read and delivered.
* Back-pressure: while more than ``OUTPUT_HIGH_WATER`` bytes of results wait for the daemon
  to read them, the worker starts no probe (``Scheduler.hold``); the delays show it.
* ``probe_once`` runs in the calling process (it is the in-process ``Scheduler``'s).

Quiet successes (``scheduler.Quiet``) work in a worker as in the daemon's process: once a plain
TCP check's results are settled (``_Batcher``: more than max(rise, fall) in a row alike), the
worker's C engine counts its successes instead of reporting each; the counts go to the daemon
as rows of their own, in order with the results (a failure's row comes after what was counted
before it), when the worker drains them: every ``QUIET_DRAIN_S`` and when the daemon asks
(``drain_slices``, before a scrape; the scrape waits up to ``DRAIN_WAIT_S``).  A worker whose
checks finished says so at least every ``HEARTBEAT_S`` (the watchdog).

Protocol (length-prefixed pickles; the workers are our own children, nothing else writes here):
main -> worker ``("add", [(id, ProbeKey), ...])``, ``("remove", [id, ...])``, ``("drain",
token)``; worker -> main ``(in_flight, rows, (delay_counts, delay_count, delay_total_s),
drained, progressed)``: rows ``(id, ok, reason, detail, duration_s, http_status,
tls_not_after)`` or ``(id, None, n, total_s, duration_counts, last_end_wall, last_duration_s)``
(counted), delays by bucket of ``DELAY_BUCKETS_S``, ``drained`` the token of the drain this
batch ends (else None), ``progressed`` whether a check finished since the batch before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

from healthd.checkspec import ProbeResult, Reason
from healthd.probes.native import QuietCount
from healthd.probeworker import Row, frame, read_frame
from healthd.scheduler import DelayFn, DrainStep, ProbeRunner, Quiet, ResultFn, Scheduler
from healthd.state import ProbeKey

log = logging.getLogger("healthd.workers")

RESTART_S = (1.0, 30.0)
STOP_S = 5.0  # a worker that has not exited this long after its input closed is killed
# A scrape waits at most this long for the workers' counts (drain_slices).
DRAIN_WAIT_S = 1.0
_REASONS = {r.value: r for r in Reason}
DelayBatchFn = Callable[[Sequence[int], int, float], None]  # counts per bucket, count, sum


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.ids: set[int] = set()
        self.proc: asyncio.subprocess.Process | None = None
        self.in_flight = 0
        self.failures = 0
        self.drained: int | None = None  # the token of the latest drain it answered


class WorkerPool(Scheduler):
    """A ``Scheduler`` whose probes run in ``workers`` child processes; ``probe_once`` runs here."""

    def __init__(
        self,
        probes: Iterable[ProbeKey],
        on_result: ResultFn,
        *,
        workers: int,
        max_concurrent: int = 1024,
        jitter: float = 0.1,
        on_delays: DelayBatchFn | None = None,
        command: list[str] | None = None,
        quiet: Quiet | None = None,
    ) -> None:
        super().__init__([], on_result, max_concurrent=max_concurrent)
        self._on_delays = on_delays
        # quiet successes: the workers decide what is settled and count; here, the counts go to
        # quiet.counted (the workers' delays come bucketed to on_delays anyway)
        self._pool_quiet = quiet
        self._drain_token = 0
        self._drain_wait: asyncio.Future[None] | None = None
        self._keys = list(dict.fromkeys(probes))
        self._worker_concurrency = max(1, max_concurrent // workers)
        self._jitter = jitter
        self._command = command or [sys.executable, "-m", "healthd.probeworker"]
        self._workers = [_Worker(i) for i in range(workers)]
        self.workers = workers
        self._ids: dict[ProbeKey, int] = {}
        self._by_id: dict[int, ProbeKey] = {}
        self._owner: dict[int, _Worker] = {}
        self._next_id = 0
        self._running = False
        self._pool_in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._pool_in_flight

    @property
    def engine_threads(self) -> int:
        return 0  # the workers run their engines on their event loops

    async def run(self) -> None:
        """Run the workers until cancelled; cancelling stops them."""
        self._running = True
        self.update(self._keys)
        tasks = [asyncio.create_task(self._supervise(w)) for w in self._workers]
        try:
            await asyncio.gather(*tasks)
        finally:
            self._running = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def update(self, keys: Iterable[ProbeKey]) -> tuple[int, int]:
        """Probe exactly ``keys`` from now on; probes that stay keep their worker and schedule."""
        wanted = list(dict.fromkeys(keys))
        self._keys = wanted
        if not self._running:
            return (0, 0)
        wanted_set = set(wanted)
        removed: dict[_Worker, list[int]] = {}
        for key in [k for k in self._ids if k not in wanted_set]:
            key_id = self._ids.pop(key)
            del self._by_id[key_id]
            owner = self._owner.pop(key_id)
            owner.ids.discard(key_id)
            removed.setdefault(owner, []).append(key_id)
        added: dict[_Worker, list[tuple[int, ProbeKey]]] = {}
        for key in wanted:
            if key in self._ids:
                continue
            key_id = self._next_id
            self._next_id += 1
            owner = min(self._workers, key=lambda w: len(w.ids))
            self._ids[key], self._by_id[key_id], self._owner[key_id] = key_id, key, owner
            owner.ids.add(key_id)
            added.setdefault(owner, []).append((key_id, key))
        for worker, ids in removed.items():
            self._send(worker, ("remove", ids))
        for worker, pairs in added.items():
            self._send(worker, ("add", pairs))
        return (sum(len(p) for p in added.values()), sum(len(i) for i in removed.values()))

    def pids(self) -> list[int]:
        """The worker processes running now."""
        return [w.proc.pid for w in self._workers if w.proc is not None]

    # ---- one worker -------------------------------------------------------------------------

    def _send(self, worker: _Worker, message: Any) -> None:
        proc = worker.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return  # not started yet, or restarting: it gets all of its probes when it starts
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(frame(message))

    async def _supervise(self, worker: _Worker) -> None:
        while True:
            started = time.monotonic()
            try:
                await self._serve(worker)
            except (OSError, asyncio.IncompleteReadError, pickle.UnpicklingError) as exc:
                log.error("probe worker %d failed: %s", worker.index, exc or type(exc).__name__)
            finally:
                await self._stop(worker)
            if time.monotonic() - started > 60:
                worker.failures = 0
            worker.failures += 1
            delay = min(RESTART_S[0] * 2 ** (worker.failures - 1), RESTART_S[1])
            log.error("probe worker %d exited; starting it again in %gs", worker.index, delay)
            await asyncio.sleep(delay)

    async def _serve(self, worker: _Worker) -> None:
        quiet = self._pool_quiet
        bounds = ",".join(repr(b) for b in quiet.duration_bounds) if quiet is not None else ""
        worker.proc = proc = await asyncio.create_subprocess_exec(
            *self._command,
            str(self._worker_concurrency),
            repr(self._jitter),
            bounds or "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        self._send(worker, ("add", [(i, self._by_id[i]) for i in sorted(worker.ids)]))
        log.info("probe worker %d (pid %d): %d probes", worker.index, proc.pid, len(worker.ids))
        while True:
            in_flight, rows, delays, drained, progressed = await read_frame(proc.stdout)
            worker.in_flight = in_flight
            self._pool_in_flight = sum(w.in_flight for w in self._workers)
            self._deliver(worker, rows, delays)
            if progressed:
                self.last_progress = time.monotonic()
            if drained is not None:
                worker.drained = drained
                self._check_drained()

    def _deliver(
        self, worker: _Worker, rows: list[Row], delays: tuple[list[int], int, float]
    ) -> None:
        if self._on_delays is not None and delays[1]:
            self._on_delays(*delays)
        quiet = self._pool_quiet
        for row in rows:
            key_id = row[0]
            key = self._by_id.get(key_id)
            if key is None or self._owner.get(key_id) is not worker:
                continue  # removed meanwhile
            try:
                if row[1] is None:  # counted successes of a quiet check
                    _, _, n, total_s, counts, last_wall, last_duration_s = row
                    self.completed += n
                    if quiet is not None:
                        count = QuietCount(n, total_s, counts, last_wall, last_duration_s)
                        quiet.counted([(key, count)])
                    continue
                _, ok, reason, detail, duration, status, not_after = row
                self.completed += 1
                self._on_result(
                    key, ProbeResult(ok, _REASONS[reason], detail, duration, status, not_after)
                )
            except Exception:
                log.exception("handling the result of %s failed", key.describe())
        if rows:
            self.last_progress = time.monotonic()

    def drain_slices(self) -> Iterator[DrainStep]:
        """Ask every worker for what its quiet checks counted; one step, a future done once they
        all answered (or after DRAIN_WAIT_S): the caller awaits it.  ``drain()`` only asks."""
        if self._pool_quiet is None or not self._running:
            return
        asking = [w for w in self._workers if w.proc is not None]
        if not asking:
            return
        self._drain_token += 1
        if self._drain_wait is None or self._drain_wait.done():
            self._drain_wait = asyncio.get_running_loop().create_future()
        wait = self._drain_wait
        for worker in asking:
            self._send(worker, ("drain", self._drain_token))
        timer = asyncio.get_running_loop().call_later(DRAIN_WAIT_S, _resolve, wait)
        try:
            yield wait
        finally:
            timer.cancel()

    def _check_drained(self) -> None:
        wait = self._drain_wait
        if wait is None or wait.done():
            return
        token = self._drain_token
        if all(w.drained == token for w in self._workers if w.proc is not None):
            wait.set_result(None)

    async def _stop(self, worker: _Worker) -> None:
        proc, worker.proc, worker.in_flight = worker.proc, None, 0
        self._pool_in_flight = sum(w.in_flight for w in self._workers)
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # a worker exits at the end of its input
        try:
            # One coroutine, not a gather: a gather cancelled inside wait_for ends with an
            # exception nobody retrieves, which asyncio logs as an error at every stop.
            await asyncio.wait_for(self._last_words(worker, proc), STOP_S)
        except TimeoutError:
            log.warning("probe worker %d did not stop within %gs: killing it", worker.index, STOP_S)
            proc.kill()
            await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            await asyncio.shield(proc.wait())
            raise

    async def _last_words(self, worker: _Worker, proc: asyncio.subprocess.Process) -> int:
        """Deliver what a stopping worker still sends (what its quiet checks counted since the
        last drain: a move to more workers or a reload must not lose it), then its exit status.
        Its output is read to the end: asyncio's wait() returns only once every pipe of the
        process is closed."""
        if proc.stdout is not None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, pickle.UnpicklingError):
                while True:
                    _, rows, delays, _, _ = await read_frame(proc.stdout)
                    self._deliver(worker, rows, delays)
        return await proc.wait()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def scheduler_for(
    workers: int | Literal["auto"],
    probes: Iterable[ProbeKey],
    on_result: ResultFn,
    *,
    max_concurrent: int,
    on_delay: DelayFn | None = None,
    on_delays: DelayBatchFn | None = None,
    quiet: Quiet | None = None,
    engine_threads: int | Literal["auto"] = "auto",
) -> ProbeRunner:
    """The in-process scheduler (``workers == 0``), a pool of that many worker processes, or
    ``"auto"``: in process until the daemon gets busy (``autoworkers``).  Schedule delays go to
    ``on_delay`` one by one from probes in this process, to ``on_delays`` in bucketed batches
    from probe workers."""
    if workers == "auto":
        from healthd.autoworkers import AutoScheduler

        return AutoScheduler(
            probes,
            on_result,
            max_concurrent=max_concurrent,
            on_delay=on_delay,
            on_delays=on_delays,
            quiet=quiet,
            engine_threads=engine_threads,
        )
    if workers <= 0:
        return Scheduler(
            probes,
            on_result,
            max_concurrent=max_concurrent,
            on_delay=on_delay,
            quiet=quiet,
            engine_threads=engine_threads if isinstance(engine_threads, int) else 0,
        )
    return WorkerPool(
        probes,
        on_result,
        workers=workers,
        max_concurrent=max_concurrent,
        on_delays=on_delays,
        quiet=quiet,
    )
