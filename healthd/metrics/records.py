"""What the metrics remember between scrapes: per-check records and per-real-server state history.

Pure: no clock (times are passed in), no I/O, no prometheus_client.  The collectors render these
records for the (virtual server, real server, check) names of the current config, so a series
exists from config load and disappears when its name leaves the config.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from healthd.checkspec import CheckSpec, HttpCheck, ProbeResult, Reason, ScriptCheck, TcpCheck
from healthd.histogram import Histogram

CheckId = tuple[str, str, str]  # (virtual server, real server, check) names
RealServerId = tuple[str, str]  # (virtual server, real server) names

# Durations: a 1-2.5-5 ladder from 0.5 ms (a LAN TCP connect) upwards; each process cuts it at
# the first step at or above the largest check timeout in its config (probes cannot last longer).
DURATION_LADDER_S = (
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
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
)

_NETWORK = (Reason.REFUSED, Reason.TIMEOUT, Reason.UNREACHABLE, Reason.RESET)


def duration_buckets(max_timeout_s: float) -> tuple[float, ...]:
    """The ladder up to and including its first step >= ``max_timeout_s``."""
    cut = bisect.bisect_left(DURATION_LADDER_S, max_timeout_s)
    return DURATION_LADDER_S[: min(cut + 1, len(DURATION_LADDER_S))]


def failure_reasons(spec: CheckSpec) -> tuple[str, ...]:
    """The failure reasons a check of this kind can report (their series exist from the start)."""
    if isinstance(spec, TcpCheck):
        return _reasons("tcp")
    if isinstance(spec, HttpCheck):
        return _reasons("http", spec.https, spec.expect_body is not None)
    if isinstance(spec, ScriptCheck):
        return _reasons("script")
    raise TypeError(spec)  # pragma: no cover - CheckSpec is a closed union


@functools.cache
def _reasons(kind: str, https: bool = False, body: bool = False) -> tuple[str, ...]:
    reasons: tuple[Reason, ...]
    if kind == "tcp":
        reasons = (*_NETWORK, Reason.ERROR)
    elif kind == "http":
        reasons = (*_NETWORK, Reason.PROTOCOL, Reason.STATUS, Reason.ERROR)
        if https:
            reasons += (Reason.TLS,)
        if body:
            reasons += (Reason.BODY,)
    else:
        reasons = (Reason.TIMEOUT, Reason.EXIT, Reason.SIGNAL, Reason.ERROR)
    return tuple(r.value for r in reasons)


@dataclass(slots=True)
class CheckRecord:
    """Everything the metrics know about one (virtual server, real server, check)."""

    duration: Histogram | None  # None: durations are not kept per check (metrics.check_duration)
    attempts: int = 0
    # reason -> count; None until the first failure (an empty dict is 64 bytes per check)
    failures: dict[str, int] | None = None
    last_attempt: float = 0.0  # Unix time; 0: never
    last_success: float = 0.0
    consecutive_failures: int = 0
    http_status: int = 0  # 0: no HTTP response to the latest attempt
    tls_not_after: float | None = None  # the latest certificate seen; kept across failures

    def observe_successes(
        self, n: int, total_s: float, counts: Sequence[int], last_wall: float
    ) -> None:
        """``n`` successes like the latest result (the same HTTP status, if any), counted
        elsewhere: durations by bucket and summed, the latest at ``last_wall``."""
        self.attempts += n
        if self.duration is not None:
            self.duration.merge(counts, n, total_s)
        self.last_attempt = self.last_success = last_wall
        self.consecutive_failures = 0

    def observe(self, result: ProbeResult, now: float) -> None:
        self.attempts += 1
        if self.duration is not None:
            self.duration.observe(result.duration_s)
        self.last_attempt = now
        if result.ok:
            self.last_success = now
            self.consecutive_failures = 0
        else:
            reason = result.reason.value
            if self.failures is None:
                self.failures = {}
            self.failures[reason] = self.failures.get(reason, 0) + 1
            self.consecutive_failures += 1
        self.http_status = result.http_status or 0
        if result.tls_not_after is not None:
            self.tls_not_after = result.tls_not_after


@dataclass(slots=True)
class RealServerHistory:
    state: str
    since_wall: float  # Unix time the current state was entered (or first seen)
    since_mono: float
    transitions: dict[str, int] | None = None  # to_state -> count; None until the first
    down_s: float = 0.0  # closed periods spent down

    def downtime(self, mono: float) -> float:
        if self.state == "down":
            return self.down_s + max(0.0, mono - self.since_mono)
        return self.down_s


class StateTracker:
    """Operator-visible states over time: transitions by target state, and time spent down.

    ``update`` compares the current states with the last ones seen; a real server seen for the
    first time starts its history there (no transition).  Call it whenever a state may have
    changed (after a health change, an override) and before rendering.
    """

    def __init__(self) -> None:
        self._history: dict[RealServerId, RealServerHistory] = {}

    def update(self, states: Mapping[RealServerId, str], wall: float, mono: float) -> None:
        for rs_id, state in states.items():
            seen = self._history.get(rs_id)
            if seen is None:
                self._history[rs_id] = RealServerHistory(state, wall, mono)
                continue
            if seen.state == state:
                continue
            if seen.state == "down":
                seen.down_s += max(0.0, mono - seen.since_mono)
            if seen.transitions is None:
                seen.transitions = {}
            seen.transitions[state] = seen.transitions.get(state, 0) + 1
            seen.state, seen.since_wall, seen.since_mono = state, wall, mono

    def get(self, rs_id: RealServerId) -> RealServerHistory | None:
        return self._history.get(rs_id)

    @property
    def history(self) -> Mapping[RealServerId, RealServerHistory]:
        return self._history

    def keep_only(self, rs_ids: Iterable[RealServerId]) -> None:
        keep = set(rs_ids)
        for rs_id in [r for r in self._history if r not in keep]:
            del self._history[rs_id]
