"""``probes.workers: auto``: when the probes leave the daemon's process, and for how many.  Pure.

The daemon measures its own CPU time (every thread) over windows of ``WINDOW_S`` and hands each
window's share of one core to ``auto_workers``.  The probes stay in the daemon's process (0
workers) until ``BUSY_WINDOWS`` windows in a row were at least ``BUSY_SHARE`` busy; then they
move to ``min(usable CPUs, MAX_AUTO_WORKERS)`` worker processes.  On one usable CPU there is
nowhere to move to: 0.

Why these figures (docs/benchmarks.md): on the host, one process keeps the p99 schedule delay
under 10 ms up to about half a core of probing (7 500 TCP checks/s at 67 us each) and lets it
slide beyond (78 ms at two thirds); in the test VM a process at 80-100 % of a vCPU detects late,
and the same config with probes in two workers detects within the bound.  Two busy windows, not
one, so a single burst (the first reconcile pass building a large table, a reload) does not
count.  The move is one step and stays: going back and forth would restart every probe's
schedule each time.
"""

from __future__ import annotations

from collections.abc import Sequence

WINDOW_S = 15.0
BUSY_SHARE = 0.5
BUSY_WINDOWS = 2
MAX_AUTO_WORKERS = 4


def auto_workers(shares: Sequence[float], usable_cpus: int) -> int:
    """Worker processes the probes need, from the daemon's recent CPU shares (oldest first)."""
    recent = shares[-BUSY_WINDOWS:]
    if usable_cpus < 2 or len(recent) < BUSY_WINDOWS or min(recent) < BUSY_SHARE:
        return 0
    return min(usable_cpus, MAX_AUTO_WORKERS)
