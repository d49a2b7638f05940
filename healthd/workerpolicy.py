"""``probes.workers: auto``: when the probes leave the daemon's process, and for how many.  Pure.

Two moves at most, each decided over windows of ``WINDOW_S`` (with ``probes.engine_threads:
auto``, the first can instead take the C engine's checks to threads of the daemon's own process,
``to_engine_threads``, ``engine_threads_for``; then it is the last):

1. ``first_move``: the probes stay in the daemon's process (0 workers) until, for
   ``BUSY_WINDOWS`` windows in a row, the process was at least ``BUSY_SHARE`` of a core busy
   and more than ``LATE_FRACTION`` of its probes started more than ``LATE_S`` late, or it was at
   least ``SATURATED_SHARE`` busy (on schedule, but with little room left for a reconcile pass,
   a scrape or the control API); then they move to one worker process.  On one usable CPU there
   is nowhere to move to: 0.
2. ``more_workers``: from one worker to ``min(usable CPUs, MAX_AUTO_WORKERS)`` once, for
   ``BUSY_WINDOWS`` windows in a row, the worker was at least ``BUSY_SHARE`` busy *and* more
   than ``LATE_FRACTION`` of the probes started more than ``LATE_S`` after they were due: the
   worker is behind its schedule because it is short of CPU.  Late starts alone (the machine's
   other work taking the CPU) would not be helped by another process of ours.

Why these figures (docs/benchmarks.md): with plain TCP checks in the C engine, one process
kept 1 000 TCP checks/s on schedule in the test VM at 68 % of a vCPU, where moving them to a
worker cost a third more CPU per check (the worker, and the daemon taking in its results): so
busy alone is no reason to move, being behind or nearly saturated is.  Earlier (every probe in
Python) a daemon at 80-100 % of a vCPU detected late, with its probes elsewhere it did not.
Probes in one worker cost 11-41 % less CPU per check than the same probes in two (a busier event
loop finds more sockets ready per wake-up), and one worker kept 1 000 TCP checks/s on schedule in
the VM: so one first, and two only when one is behind. Two busy windows, not one, so a single burst
(the first reconcile pass building a large table, a reload) does not count. A move stays: going back
would restart every probe's schedule again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from healthd.histogram import DELAY_BUCKETS_S, Histogram

WINDOW_S = 15.0
BUSY_SHARE = 0.5
SATURATED_SHARE = 0.85
BUSY_WINDOWS = 2
LATE_S = 0.1  # one of DELAY_BUCKETS_S: the workers' delays come bucketed
LATE_FRACTION = 0.01
MAX_AUTO_WORKERS = 4
# probes.engine_threads: auto: the first move goes to the C engine's threads, in the daemon's
# process, when at least this share of the probes are the engine's
ENGINE_SHARE = 0.5
MAX_ENGINE_THREADS = 4
_ON_TIME = DELAY_BUCKETS_S.index(LATE_S) + 1  # the buckets up to LATE_S: started on time


class WorkerWindow(NamedTuple):
    """One window of the process running the probes (the busiest one, with workers): its share
    of a core, and the share of probe starts more than ``LATE_S`` late."""

    busiest_share: float
    late_fraction: float


def late_starts(counts: Sequence[int], count: int) -> int:
    """How many of ``count`` probe starts, bucketed by ``DELAY_BUCKETS_S`` in ``counts``, were
    more than ``LATE_S`` late."""
    return count - sum(counts[:_ON_TIME])


def late_fraction(delays: Histogram) -> float:
    """The share of the probe starts in ``delays`` (a window's schedule delays, bucketed by
    ``DELAY_BUCKETS_S``) more than ``LATE_S`` late."""
    if not delays.count:
        return 0.0
    return late_starts(delays.counts, delays.count) / delays.count


def first_move(windows: Sequence[WorkerWindow], usable_cpus: int) -> int:
    """Worker processes the probes need now that they run in the daemon's process (0: stay),
    from the daemon's windows (oldest first)."""
    recent = windows[-BUSY_WINDOWS:]
    if usable_cpus < 2 or len(recent) < BUSY_WINDOWS:
        return 0
    behind = all(w.busiest_share >= BUSY_SHARE and w.late_fraction > LATE_FRACTION for w in recent)
    saturated = all(w.busiest_share >= SATURATED_SHARE for w in recent)
    return 1 if behind or saturated else 0


def to_engine_threads(engine_share: float) -> bool:
    """Whether the first move takes the probes to the C engine's threads (in the daemon's
    process) rather than to a worker process: most of them are the engine's."""
    return engine_share >= ENGINE_SHARE


def engine_threads_for(usable_cpus: int) -> int:
    """The C engine's threads after that move: one per usable CPU but one (left to the event
    loop and the kernel's packet processing), at least one, at most ``MAX_ENGINE_THREADS``."""
    return max(1, min(usable_cpus - 1, MAX_ENGINE_THREADS))


def more_workers(windows: Sequence[WorkerWindow], usable_cpus: int) -> int:
    """Worker processes the probes need now that they run in one (1: stay), from the windows
    since they moved there (oldest first)."""
    recent = windows[-BUSY_WINDOWS:]
    if len(recent) < BUSY_WINDOWS:
        return 1
    behind = all(w.busiest_share >= BUSY_SHARE and w.late_fraction > LATE_FRACTION for w in recent)
    return max(1, min(usable_cpus, MAX_AUTO_WORKERS)) if behind else 1
