"""Probes in worker processes (``probes.workers: N``): the ``Scheduler`` interface, N processes.

When one core cannot run every probe on schedule, or the main event loop is busy with
reconcile passes and scrapes of a large config, the probes move to ``N`` worker processes
(``python -m healthd.workers``).  Each worker runs an ordinary ``Scheduler`` over its share of the
probes and sends results back in batches (a pickle per batch: within ``FLUSH_S`` of a result that
may change a verdict, within ``SETTLED_FLUSH_S`` of one that cannot, see ``_Batcher``); the
main process hands every result to the same callback as the in-process scheduler does, so health,
metrics and the reconciler do not know the difference.  Schedule delays come bucketed
(``healthd.histogram``, one histogram per batch) and go to ``on_delays`` in one call.

* Probes are spread over workers by count; a probe stays on its worker across ``update()``.
* A worker that dies is started again (after 1 s, then up to 30 s) with the same probes; its
  probes make no progress meanwhile, which the watchdog (``last_progress``) sees.
* A worker exits when its stdin closes, so it never outlives the daemon, even a killed one.
* Back-pressure: while more than ``OUTPUT_HIGH_WATER`` bytes of results wait for the daemon
  to read them, the worker starts no probe (``Scheduler.hold``); the delays show it.
* ``probe_once`` runs in the calling process (it is the in-process ``Scheduler``'s).

Protocol (length-prefixed pickles; the workers are our own children, nothing else writes here):
main -> worker ``("add", [(id, ProbeKey), ...])``, ``("remove", [id, ...])``; worker -> main
``(in_flight, [(id, ok, reason, detail, duration_s, http_status, tls_not_after), ...],
(delay_counts, delay_count, delay_total_s))`` (counts per bucket of ``DELAY_BUCKETS_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import pickle
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from healthd.checkspec import ProbeResult, Reason
from healthd.histogram import DELAY_BUCKETS_S, Histogram
from healthd.scheduler import DelayFn, ProbeRunner, Quiet, ResultFn, Scheduler
from healthd.state import ProbeKey

log = logging.getLogger("healthd.workers")

FLUSH_S = 0.005  # a result that may change a verdict waits at most this long in a worker
SETTLED_FLUSH_S = 0.1  # one that cannot (see _Batcher) waits at most this long
FLUSH_COUNT = 512
RESTART_S = (1.0, 30.0)
OUTPUT_HIGH_WATER = 1 << 20  # results waiting to be read by the daemon: beyond, stop probing
STOP_S = 5.0  # a worker that has not exited this long after its input closed is killed
_LEN = struct.Struct("!I")
_REASONS = {r.value: r for r in Reason}
ResultRow = tuple[int, bool, str, str, float, int | None, float | None]
DelayBatchFn = Callable[[Sequence[int], int, float], None]  # counts per bucket, count, sum


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    return pickle.loads(await reader.readexactly(size))


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.ids: set[int] = set()
        self.proc: asyncio.subprocess.Process | None = None
        self.in_flight = 0
        self.failures = 0


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
    ) -> None:
        super().__init__([], on_result, max_concurrent=max_concurrent)
        self._on_delays = on_delays
        self._keys = list(dict.fromkeys(probes))
        self._worker_concurrency = max(1, max_concurrent // workers)
        self._jitter = jitter
        self._command = command or [sys.executable, "-m", "healthd.workers"]
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
            proc.stdin.write(_frame(message))

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
        worker.proc = proc = await asyncio.create_subprocess_exec(
            *self._command,
            str(self._worker_concurrency),
            repr(self._jitter),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        self._send(worker, ("add", [(i, self._by_id[i]) for i in sorted(worker.ids)]))
        log.info("probe worker %d (pid %d): %d probes", worker.index, proc.pid, len(worker.ids))
        while True:
            in_flight, rows, delays = await _read_frame(proc.stdout)
            worker.in_flight = in_flight
            self._pool_in_flight = sum(w.in_flight for w in self._workers)
            self._deliver(worker, rows, delays)

    def _deliver(
        self, worker: _Worker, rows: list[ResultRow], delays: tuple[list[int], int, float]
    ) -> None:
        if self._on_delays is not None and delays[1]:
            self._on_delays(*delays)
        for key_id, ok, reason, detail, duration, status, not_after in rows:
            key = self._by_id.get(key_id)
            if key is None or self._owner.get(key_id) is not worker:
                continue  # removed meanwhile
            result = ProbeResult(ok, _REASONS[reason], detail, duration, status, not_after)
            self.completed += 1
            try:
                self._on_result(key, result)
            except Exception:
                log.exception("handling the result of %s failed", key.describe())
        if rows:
            self.last_progress = time.monotonic()

    async def _stop(self, worker: _Worker) -> None:
        proc, worker.proc, worker.in_flight = worker.proc, None, 0
        self._pool_in_flight = sum(w.in_flight for w in self._workers)
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # a worker exits at the end of its input
        try:
            # Read its output to the end: asyncio's wait() returns only once every pipe of the
            # process is closed, and a reader nobody reads stops reading before the end.
            # One coroutine, not a gather: a gather cancelled inside wait_for ends with an
            # exception nobody retrieves, which asyncio logs as an error at every stop.
            await asyncio.wait_for(_drain_and_wait(proc), STOP_S)
        except TimeoutError:
            log.warning("probe worker %d did not stop within %gs: killing it", worker.index, STOP_S)
            proc.kill()
            await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            await asyncio.shield(proc.wait())
            raise


async def _drain_and_wait(proc: asyncio.subprocess.Process) -> int:
    """Read a process's output to its end, then wait for its exit status."""
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            while await proc.stdout.read(1 << 16):
                pass
    return await proc.wait()


# ---- the worker process -----------------------------------------------------------------------


class _Batcher:
    """Collects results and delays and sends them in batches: within FLUSH_S of a result that
    may change a verdict, else within SETTLED_FLUSH_S.

    A result is settled when its probe has had more than max(rise, fall) results in a row with
    the same outcome (OK or not), this one included: whatever state the daemon's health book
    held for it, that many results in a row have brought it to the verdict they say (rise OKs
    bring any state up, fall failures any state down), so this one changes nothing but
    counters.  Nearly every result is settled; sending those every 100 ms instead of every 5 ms
    saves the daemon most of its reads and wake-ups, and detection waits for none of them.
    """

    def __init__(self, out: Any, scheduler: list[Scheduler]) -> None:
        self._out = out
        self._scheduler = scheduler
        self._ids: dict[ProbeKey, int] = {}
        # per probe id: its latest outcome and how many results in a row have had it
        self._streaks: dict[int, tuple[bool, int]] = {}
        self._rows: list[ResultRow] = []
        self._delays = Histogram(DELAY_BUCKETS_S)
        self._timer: asyncio.TimerHandle | None = None
        self._due_at = math.inf  # loop time the pending batch is due

    def forget(self, key: ProbeKey) -> None:
        key_id = self._ids.pop(key, None)
        if key_id is not None:
            self._streaks.pop(key_id, None)

    def on_result(self, key: ProbeKey, r: ProbeResult) -> None:
        key_id = self._ids.get(key)
        if key_id is None:
            return
        row = (key_id, r.ok, r.reason.value, r.detail, r.duration_s, r.http_status, r.tls_not_after)
        self._rows.append(row)
        last_ok, run = self._streaks.get(key_id, (not r.ok, 0))
        run = run + 1 if last_ok is r.ok else 1
        self._streaks[key_id] = (r.ok, run)
        timing = key.timing
        self._due(SETTLED_FLUSH_S if run > max(timing.rise, timing.fall) else FLUSH_S)

    def on_delay(self, delay: float) -> None:
        self._delays.observe(delay)
        self._due(SETTLED_FLUSH_S)

    def _due(self, within_s: float) -> None:
        if len(self._rows) >= FLUSH_COUNT:
            self.flush()
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + within_s
        if due < self._due_at:
            if self._timer is not None:
                self._timer.cancel()
            self._due_at = due
            self._timer = loop.call_at(due, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due_at = math.inf
        in_flight = self._scheduler[0].in_flight if self._scheduler else 0
        delays = self._delays
        # buffered, never blocks
        self._out.write(
            _frame((in_flight, self._rows, (delays.counts, delays.count, delays.total)))
        )
        self._rows, self._delays = [], Histogram(DELAY_BUCKETS_S)


class _Output(asyncio.Protocol):
    """The results pipe: while the daemon cannot keep up reading it, the worker stops probing."""

    def __init__(self, scheduler: list[Scheduler]) -> None:
        self._scheduler = scheduler

    def pause_writing(self) -> None:
        if self._scheduler:
            self._scheduler[0].hold(True)

    def resume_writing(self) -> None:
        if self._scheduler:
            self._scheduler[0].hold(False)


async def _worker_main(max_concurrent: int, jitter: float) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    holder: list[Scheduler] = []
    out, _ = await loop.connect_write_pipe(lambda: _Output(holder), sys.stdout)
    out.set_write_buffer_limits(high=OUTPUT_HIGH_WATER)
    batcher = _Batcher(out, holder)
    scheduler = Scheduler(
        [],
        batcher.on_result,
        max_concurrent=max_concurrent,
        jitter=jitter,
        on_delay=batcher.on_delay,
    )
    holder.append(scheduler)
    keys: dict[int, ProbeKey] = {}
    running = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0)
    try:
        while True:
            try:
                verb, items = await _read_frame(reader)
            except asyncio.IncompleteReadError:
                return  # the daemon closed our input: stop
            if verb == "add":
                for key_id, key in items:
                    keys[key_id] = key
                    batcher._ids[key] = key_id
            else:
                for key_id in items:
                    key = keys.pop(key_id, None)
                    if key is not None:
                        batcher.forget(key)
            scheduler.update(keys.values())
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def main(argv: list[str]) -> int:
    """Entry point of a worker: ``python -m healthd.workers MAX_CONCURRENT JITTER``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s",
        stream=sys.stderr,
    )
    max_concurrent, jitter = int(argv[0]), float(argv[1])
    with contextlib.suppress(BrokenPipeError):
        asyncio.run(_worker_main(max_concurrent, jitter))
    return 0


def scheduler_for(
    workers: int | Literal["auto"],
    probes: Iterable[ProbeKey],
    on_result: ResultFn,
    *,
    max_concurrent: int,
    on_delay: DelayFn | None = None,
    on_delays: DelayBatchFn | None = None,
    quiet: Quiet | None = None,
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
        )
    if workers <= 0:
        return Scheduler(
            probes, on_result, max_concurrent=max_concurrent, on_delay=on_delay, quiet=quiet
        )
    return WorkerPool(
        probes, on_result, workers=workers, max_concurrent=max_concurrent, on_delays=on_delays
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
