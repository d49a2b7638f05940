"""probes.workers: auto: the two moves, from the daemon's CPU shares and then the worker's
(pure)."""

from __future__ import annotations

from healthd.histogram import DELAY_BUCKETS_S, Histogram
from healthd.workerpolicy import (
    BUSY_SHARE,
    LATE_FRACTION,
    LATE_S,
    MAX_AUTO_WORKERS,
    SATURATED_SHARE,
    WorkerWindow,
    first_move,
    late_fraction,
    more_workers,
)


def busy(*shares: float, late: float = 0.0) -> list[WorkerWindow]:
    return [WorkerWindow(share, late) for share in shares]


def test_stays_in_process_while_the_daemon_is_not_busy() -> None:
    assert first_move([], 2) == 0
    assert first_move(busy(0.1, 0.2, 0.3, late=0.5), 8) == 0  # late, but not for want of CPU
    assert first_move(busy(BUSY_SHARE - 0.01, 0.95, late=0.5), 2) == 0


def test_busy_but_on_schedule_stays_in_process() -> None:
    # a worker would cost more CPU per check (the daemon takes in its results as well)
    assert first_move(busy(0.7, 0.8), 2) == 0
    assert first_move(busy(0.7, 0.8, late=LATE_FRACTION), 2) == 0


def test_one_busy_window_is_a_burst_not_a_load() -> None:
    assert first_move(busy(0.99, late=0.5), 2) == 0
    assert first_move(busy(0.2, 0.99, late=0.5), 2) == 0
    assert first_move(busy(0.99, 0.2, late=0.5), 2) == 0


def test_busy_and_behind_or_saturated_moves_the_probes_to_one_worker_first() -> None:
    assert first_move(busy(BUSY_SHARE, 0.6, late=LATE_FRACTION * 2), 2) == 1
    assert first_move(busy(0.1, 0.8, 1.2, late=0.05), 3) == 1  # the last two count
    assert first_move(busy(SATURATED_SHARE, 0.9), 64) == 1  # on schedule, no room left
    assert first_move(busy(SATURATED_SHARE - 0.01, 0.9), 2) == 0


def test_one_cpu_has_nowhere_to_move_to() -> None:
    assert first_move(busy(1.0, 1.0, late=0.5), 1) == 0


BEHIND = WorkerWindow(busiest_share=0.95, late_fraction=0.2)


def test_a_worker_behind_its_schedule_for_want_of_cpu_gets_company() -> None:
    assert more_workers([BEHIND, BEHIND], 2) == 2
    assert more_workers([WorkerWindow(BUSY_SHARE, LATE_FRACTION + 0.001)] * 2, 3) == 3
    assert more_workers([WorkerWindow(0.1, 0.0), BEHIND, BEHIND], 64) == MAX_AUTO_WORKERS


def test_one_worker_stays_alone_when_on_time_idle_or_only_briefly_behind() -> None:
    assert more_workers([], 2) == 1
    assert more_workers([BEHIND], 2) == 1  # a burst
    assert more_workers([BEHIND, WorkerWindow(0.99, 0.0)], 2) == 1  # busy, on time
    assert more_workers([BEHIND, WorkerWindow(0.99, LATE_FRACTION)], 2) == 1  # at the limit
    # late but not busy: the CPU went elsewhere; another process of ours would not help
    assert more_workers([BEHIND, WorkerWindow(BUSY_SHARE - 0.01, 0.5)], 2) == 1
    assert more_workers([BEHIND, BEHIND], 1) == 1


def test_late_starts_are_those_in_buckets_beyond_the_late_bound_and_above_the_last() -> None:
    delays = Histogram(DELAY_BUCKETS_S)
    assert late_fraction(delays) == 0.0  # no starts: not behind
    for value in (0.0, 0.001, LATE_S, LATE_S + 0.001, 0.5, 60.0):  # 60 s: above every bound
        delays.observe(value)
    assert late_fraction(delays) == 3 / 6
