"""probes.workers: auto: the decision from the daemon's CPU shares (pure)."""

from __future__ import annotations

from healthd.workerpolicy import BUSY_SHARE, MAX_AUTO_WORKERS, auto_workers


def test_stays_in_process_while_the_daemon_is_not_busy() -> None:
    assert auto_workers([], 2) == 0
    assert auto_workers([0.1, 0.2, 0.3], 8) == 0
    assert auto_workers([BUSY_SHARE - 0.01, 0.95], 2) == 0


def test_one_busy_window_is_a_burst_not_a_load() -> None:
    assert auto_workers([0.99], 2) == 0
    assert auto_workers([0.2, 0.99], 2) == 0
    assert auto_workers([0.99, 0.2], 2) == 0


def test_two_busy_windows_move_the_probes_to_as_many_workers_as_cpus_up_to_the_cap() -> None:
    assert auto_workers([BUSY_SHARE, 0.9], 2) == 2
    assert auto_workers([0.1, 0.8, 1.2], 3) == 3  # the last two count
    assert auto_workers([0.9, 0.9], 64) == MAX_AUTO_WORKERS


def test_one_cpu_has_nowhere_to_move_to() -> None:
    assert auto_workers([1.0, 1.0], 1) == 0
