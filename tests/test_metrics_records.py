"""The metrics' book-keeping (pure): buckets, failure reasons, check records, state history."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from healthd.checkspec import HttpCheck, ProbeResult, Reason, ScriptCheck, TcpCheck
from healthd.histogram import Histogram
from healthd.metrics.records import (
    DURATION_LADDER_S,
    CheckRecord,
    StateTracker,
    duration_buckets,
    failure_reasons,
)


def test_buckets_start_below_a_millisecond_and_stop_at_the_first_step_past_the_timeout() -> None:
    assert duration_buckets(1.0) == (
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
    )
    assert duration_buckets(0.3)[-1] == 0.5
    assert duration_buckets(2.0)[-2:] == (1.0, 2.5)
    assert duration_buckets(3600.0)[-1] == 5000.0
    assert duration_buckets(99999.0) == DURATION_LADDER_S


@given(st.floats(min_value=0.001, max_value=5000.0))
def test_every_timeout_has_a_bucket_at_or_above_it(timeout: float) -> None:
    buckets = duration_buckets(timeout)
    assert buckets[0] < 0.001
    assert buckets[-1] >= timeout
    assert len(buckets) == 1 or buckets[-2] < timeout


def test_failure_reasons_are_those_the_check_can_produce() -> None:
    assert failure_reasons(TcpCheck()) == ("refused", "timeout", "unreachable", "reset", "error")
    assert set(failure_reasons(HttpCheck())) == {
        "refused",
        "timeout",
        "unreachable",
        "reset",
        "protocol",
        "status",
        "error",
    }
    https = failure_reasons(HttpCheck(https=True, expect_body="ok"))
    assert {"tls", "body"} <= set(https)
    assert set(failure_reasons(ScriptCheck(("/bin/true",)))) == {
        "timeout",
        "exit",
        "signal",
        "error",
    }
    assert all(Reason(r) is not Reason.OK for r in https)


@given(st.lists(st.floats(min_value=0.0, max_value=20.0), max_size=40))
def test_histogram_is_cumulative_and_counts_everything(values: list[float]) -> None:
    h = Histogram(duration_buckets(10.0))
    for v in values:
        h.observe(v)
    assert h.count == len(values)
    assert h.total == sum(values)
    for bound, count in zip(h.bounds, h.cumulative, strict=True):
        assert count == sum(1 for v in values if v <= bound)


@given(
    st.lists(st.floats(min_value=0.0, max_value=20.0), max_size=40),
    st.lists(st.floats(min_value=0.0, max_value=20.0), max_size=40),
)
def test_a_merged_histogram_is_the_histogram_of_both_sets_of_values(
    mine: list[float], theirs: list[float]
) -> None:
    bounds = duration_buckets(10.0)
    merged, other, both = Histogram(bounds), Histogram(bounds), Histogram(bounds)
    for v in mine:
        merged.observe(v)
        both.observe(v)
    for v in theirs:
        other.observe(v)
        both.observe(v)
    merged.merge(other.counts, other.count, other.total)
    assert (merged.cumulative, merged.count) == (both.cumulative, both.count)
    assert math.isclose(merged.total, both.total, abs_tol=1e-9)


def result(ok: bool, reason: Reason = Reason.OK, **extra: object) -> ProbeResult:
    return ProbeResult(ok=ok, reason=reason, detail="d", duration_s=0.002, **extra)  # type: ignore[arg-type]


def test_check_record_keeps_counts_streaks_and_latest_values() -> None:
    record = CheckRecord(Histogram(duration_buckets(1.0)))
    record.observe(result(True, http_status=200), now=100.0)
    record.observe(result(False, Reason.TIMEOUT), now=101.0)
    record.observe(result(False, Reason.STATUS, http_status=503, tls_not_after=5e9), now=102.0)
    assert record.attempts == 3
    assert record.failures == {"timeout": 1, "status": 1}
    assert record.consecutive_failures == 2
    assert (record.last_attempt, record.last_success) == (102.0, 100.0)
    assert record.http_status == 503
    assert record.tls_not_after == 5e9
    record.observe(result(False, Reason.REFUSED), now=103.0)  # no response, no certificate
    assert record.http_status == 0
    assert record.tls_not_after == 5e9  # the certificate did not change because a probe failed
    record.observe(result(True, http_status=200), now=104.0)
    assert record.consecutive_failures == 0
    assert record.last_success == 104.0


def test_state_history_counts_transitions_and_time_down() -> None:
    tracker = StateTracker()
    rs = ("web", "a")
    tracker.update({rs: "unknown"}, wall=1000.0, mono=0.0)
    history = tracker.get(rs)
    assert history is not None and not history.transitions  # first sight is not a change
    tracker.update({rs: "up"}, wall=1001.0, mono=1.0)
    tracker.update({rs: "down"}, wall=1010.0, mono=10.0)
    tracker.update({rs: "down"}, wall=1015.0, mono=15.0)  # no change
    assert history.downtime(mono=25.0) == 15.0  # the current outage counts
    tracker.update({rs: "up"}, wall=1030.0, mono=30.0)
    tracker.update({rs: "down"}, wall=1040.0, mono=40.0)
    tracker.update({rs: "maintenance"}, wall=1042.0, mono=42.0)
    assert history.transitions == {"up": 2, "down": 2, "maintenance": 1}
    assert history.downtime(mono=100.0) == 22.0
    assert (history.state, history.since_wall) == ("maintenance", 1042.0)


def test_forgotten_real_servers_start_again_from_nothing() -> None:
    tracker = StateTracker()
    tracker.update({("web", "a"): "up", ("web", "b"): "up"}, 0.0, 0.0)
    tracker.update({("web", "a"): "down", ("web", "b"): "down"}, 1.0, 1.0)
    tracker.keep_only([("web", "a")])
    assert tracker.get(("web", "b")) is None
    tracker.update({("web", "b"): "up"}, 2.0, 2.0)
    history = tracker.get(("web", "b"))
    assert history is not None and not history.transitions
