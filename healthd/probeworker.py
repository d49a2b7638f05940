"""The probe worker process (``python -m healthd.probeworker``), the other end of ``workers.py``.

A worker runs an ordinary ``Scheduler`` over the probes the daemon sends it and sends results back
in batches (``_Batcher``), with quiet successes counted in its C engine as in the daemon
(``scheduler.Quiet``); the protocol is in ``workers.py``'s docstring.  It exits when its input
closes, so it never outlives the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import pickle
import signal
import struct
import sys
from collections.abc import Sequence
from typing import Any

from healthd.checkspec import ProbeResult
from healthd.histogram import DELAY_BUCKETS_S, Histogram
from healthd.probes.native import QuietCount
from healthd.scheduler import PROBES_NICE, Quiet, Scheduler
from healthd.state import ProbeKey

FLUSH_S = 0.005  # a result that may change a verdict waits at most this long in a worker
SETTLED_FLUSH_S = 0.1  # one that cannot (see _Batcher) waits at most this long
FLUSH_COUNT = 512
OUTPUT_HIGH_WATER = 1 << 20  # results waiting to be read by the daemon: beyond, stop probing
# A worker whose checks finished (counted quietly included) says so at least this often, so the
# daemon's watchdog sees progress between two drains of the counts.
HEARTBEAT_S = 1.0
_LEN = struct.Struct("!I")
ResultRow = tuple[int, bool, str, str, float, int | None, float | None]
# a quiet check's counted successes: (id, None, n, total_s, counts, last_end_wall, last_duration_s)
CountedRow = tuple[int, None, int, float, tuple[int, ...], float, float]
Row = ResultRow | CountedRow


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    return pickle.loads(await reader.readexactly(size))


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
        self._rows: list[Row] = []
        self._delays = Histogram(DELAY_BUCKETS_S)
        self._timer: asyncio.TimerHandle | None = None
        self._due_at = math.inf  # loop time the pending batch is due
        self._drained: int | None = None  # the drain the next batch ends
        self._progress_sent = 0.0  # the scheduler's last_progress when a batch last went

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
        self._due(SETTLED_FLUSH_S if _settled_run(key, run) else FLUSH_S)

    def on_delay(self, delay: float) -> None:
        self._delays.observe(delay)
        self._due(SETTLED_FLUSH_S)

    # ---- quiet successes (scheduler.Quiet) ----------------------------------------------------

    def settled(self, key: ProbeKey, r: ProbeResult) -> bool:
        """Whether more successes like ``r`` would change nothing in the daemon: ``r`` is a
        settled success (see the class)."""
        key_id = self._ids.get(key)
        if key_id is None or not r.ok:
            return False
        ok, run = self._streaks.get(key_id, (False, 0))
        return ok and _settled_run(key, run)

    def counted(self, counted: Sequence[tuple[ProbeKey, QuietCount]]) -> None:
        ids, rows = self._ids, self._rows
        for key, c in counted:
            key_id = ids.get(key)
            if key_id is not None:
                rows.append(
                    (key_id, None, c.n, c.total_s, c.counts, c.last_end_wall, c.last_duration_s)
                )
        self._due(SETTLED_FLUSH_S)

    def quiet_delays(self, counts: Sequence[int], n: int, total_s: float) -> None:
        self._delays.merge(counts, n, total_s)
        self._due(SETTLED_FLUSH_S)

    def drained(self, token: int) -> None:
        """A drain the daemon asked for is done: the batch that ends it goes now."""
        self._drained = token
        self.flush()

    def heartbeat(self) -> None:
        """A batch (maybe empty) if checks finished since the last one (the daemon's watchdog)."""
        if self._scheduler and self._scheduler[0].last_progress > self._progress_sent:
            self.flush()

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
        scheduler = self._scheduler[0] if self._scheduler else None
        in_flight = scheduler.in_flight if scheduler is not None else 0
        progress = scheduler.last_progress if scheduler is not None else 0.0
        progressed, self._progress_sent = progress > self._progress_sent, progress
        delays = self._delays
        batch = (
            in_flight,
            self._rows,
            (delays.counts, delays.count, delays.total),
            self._drained,
            progressed,
        )
        self._out.write(frame(batch))  # buffered, never blocks
        self._rows, self._delays, self._drained = [], Histogram(DELAY_BUCKETS_S), None


def _settled_run(key: ProbeKey, run: int) -> bool:
    """Whether ``run`` alike results in a row settle ``key`` whatever the daemon's book held for
    it (see ``_Batcher``)."""
    return run > max(key.timing.rise, key.timing.fall)


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


async def _heartbeats(batcher: _Batcher) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        batcher.heartbeat()


async def _worker_main(
    max_concurrent: int, jitter: float, duration_bounds: tuple[float, ...] | None = None
) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    holder: list[Scheduler] = []
    out, _ = await loop.connect_write_pipe(lambda: _Output(holder), sys.stdout)
    out.set_write_buffer_limits(high=OUTPUT_HIGH_WATER)
    batcher = _Batcher(out, holder)
    quiet = None
    if duration_bounds is not None:
        quiet = Quiet(batcher.settled, batcher.counted, batcher.quiet_delays, duration_bounds)
    scheduler = Scheduler(
        [],
        batcher.on_result,
        max_concurrent=max_concurrent,
        jitter=jitter,
        on_delay=batcher.on_delay,
        quiet=quiet,
    )
    holder.append(scheduler)
    keys: dict[int, ProbeKey] = {}
    running = asyncio.create_task(scheduler.run())
    beats = asyncio.create_task(_heartbeats(batcher))
    await asyncio.sleep(0)
    try:
        while True:
            try:
                verb, items = await read_frame(reader)
            except asyncio.IncompleteReadError:
                return  # the daemon closed our input: stop
            if verb == "drain":
                for _ in scheduler.drain_slices():
                    await asyncio.sleep(0)
                batcher.drained(items)
                continue
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
        beats.cancel()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running  # its last drain: what the quiet checks counted since the one before
        with contextlib.suppress(OSError, RuntimeError):
            batcher.flush()  # ... goes to the daemon, which reads to the end of our output


def main(argv: list[str]) -> int:
    """Entry point of a worker: ``python -m healthd.probeworker MAX_CONCURRENT JITTER BOUNDS``
    (BOUNDS: the probe duration buckets, comma-separated, for quiet successes; ``-``: none)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    os.nice(PROBES_NICE)  # the kernel's packet processing and the daemon go first
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s",
        stream=sys.stderr,
    )
    max_concurrent, jitter = int(argv[0]), float(argv[1])
    bounds = argv[2] if len(argv) > 2 else "-"
    duration_bounds = None if bounds == "-" else tuple(float(b) for b in bounds.split(",") if b)
    with contextlib.suppress(BrokenPipeError):
        asyncio.run(_worker_main(max_concurrent, jitter, duration_bounds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
