"""Custom collectors: render the latest snapshots as metric families at scrape time.

They read only in-memory snapshots (config, health book, last desired table, the reconciler's
last kernel dump, the records in ``records.py``), never netlink, so a scrape never waits on the
kernel.  Label sets follow the current config: a real server or check that leaves the config
leaves the exposition with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

from healthd.config.types import Config
from healthd.histogram import Histogram
from healthd.metrics.layout import Layouts, PooledId, ServerLayout
from healthd.metrics.records import (
    CheckId,
    CheckRecord,
    RealServerHistory,
    RealServerId,
    StateTracker,
)
from healthd.metrics.text import Family, Pairs, le_labels, present
from healthd.model import Desired, DesiredRealServer, Observed, ObservedRealServer
from healthd.overrides import Override
from healthd.plan import wanted_weight
from healthd.policy import REAL_SERVER_STATES, RealServerStatus

Clock = Callable[[], float]


def _zero() -> int:
    return 0


def _no_overrides() -> Mapping[RealServerId, Override]:
    return {}


@dataclass(frozen=True)
class Sources:
    """Where the collectors read their snapshots (each call is cheap and non-blocking)."""

    config: Callable[[], Config]
    status: Callable[[], Mapping[RealServerId, RealServerStatus]]
    # (virtual server, real server) -> one of policy.REAL_SERVER_STATES
    states: Callable[[], Mapping[RealServerId, str]]
    desired: Callable[[], Desired]
    observed: Callable[[], Observed]
    in_flight: Callable[[], int] = _zero
    probe_workers: Callable[[], int] = _zero  # worker processes (0: in process)
    probe_engine_threads: Callable[[], int] = _zero  # the C engine's threads (0: on the loop)
    overrides: Callable[[], Mapping[RealServerId, Override]] = _no_overrides


class _CheckFamilies:
    def __init__(self) -> None:
        self.attempts = Family("healthd_check_attempts", "counter", "Probes run for this check")
        self.failures = Family(
            "healthd_check_failures",
            "counter",
            "Probes that failed, by reason (timeout, refused, status, ...)",
        )
        self.duration = Family(
            "healthd_check_duration_seconds",
            "histogram",
            "Duration of each probe, failed ones included (a timeout counts as the timeout)",
        )
        self.last_attempt = Family(
            "healthd_check_last_attempt_timestamp_seconds",
            "gauge",
            "Unix time of the latest probe (0: none yet)",
        )
        self.last_success = Family(
            "healthd_check_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the latest successful probe (0: none yet)",
        )
        self.consecutive = Family(
            "healthd_check_consecutive_failures",
            "gauge",
            "Failed probes in a row, up to now (0 after a success)",
        )
        self.interval = Family(
            "healthd_check_interval_seconds", "gauge", "Configured probe interval"
        )
        self.timeout = Family("healthd_check_timeout_seconds", "gauge", "Configured probe timeout")
        self.http_status = Family(
            "healthd_check_http_status_code",
            "gauge",
            "HTTP status of the latest response (HTTP checks; 0: no response)",
        )
        self.cert_expiry = Family(
            "healthd_check_tls_cert_expiry_timestamp_seconds",
            "gauge",
            "notAfter of the latest server certificate seen, as Unix time (HTTPS checks)",
        )

    def all(self) -> list[Family]:
        return list(vars(self).values())


class ChecksCollector:
    """Per (virtual server, real server, check): counters, duration histogram, latest values."""

    def __init__(
        self,
        config: Callable[[], Config],
        records: Mapping[CheckId, CheckRecord],
        buckets: tuple[float, ...],
        pooled: Mapping[PooledId, Histogram] | None = None,
        granularity: str = "per_real_server",
        layouts: Layouts | None = None,
    ) -> None:
        """``granularity`` is ``metrics.check_duration``; with ``per_virtual_server`` the
        durations come from ``pooled``, by (virtual server, check)."""
        self._config = config
        self._records = records
        self._buckets = buckets
        self._pooled = {} if pooled is None else pooled  # the live mapping, filled later
        self._granularity = granularity
        self._les = le_labels(buckets)
        self._families = _CheckFamilies()
        self._layouts = Layouts() if layouts is None else layouts

    def pieces(self) -> Iterator[bytes]:
        """The families' text, a piece at a time (``text.py``): each is written when it is
        asked for, from the values of that moment."""
        lay = self._layouts.checks(self._config())
        f = self._families
        for family in f.all():
            family.start()
        blank = CheckRecord(Histogram(self._buckets))
        get, blocks = self._records.get, lay.blocks
        recs = [get(check_id, blank) for check_id in lay.ids]
        yield from f.attempts.column_pieces(blocks, [r.attempts for r in recs])
        failures = [
            z if not r.failures else _by_reason(z, r.failures)
            for z, r in zip(lay.zeros, recs, strict=True)
        ]
        yield from f.failures.group_pieces(blocks, "reason", failures)
        histograms: tuple[Sequence[str], Sequence[Histogram]] = ((), ())
        if self._granularity == "per_real_server":
            histograms = present(blocks, [r.duration for r in recs])
        elif self._granularity == "per_virtual_server":
            empty = Histogram(self._buckets)
            histograms = (lay.pool_blocks, [self._pooled.get(pool) or empty for pool in lay.pools])
        yield from f.duration.histogram_pieces(*histograms, les=self._les)
        yield from f.last_attempt.column_pieces(blocks, [r.last_attempt for r in recs])
        yield from f.last_success.column_pieces(blocks, [r.last_success for r in recs])
        yield from f.consecutive.column_pieces(blocks, [r.consecutive_failures for r in recs])
        yield from f.interval.column_pieces(blocks, lay.intervals)
        yield from f.timeout.column_pieces(blocks, lay.timeouts)
        http = [recs[i] for i in lay.http]
        yield from f.http_status.column_pieces(lay.http_blocks, [r.http_status for r in http])
        yield from f.cert_expiry.column_pieces(
            *present(lay.http_blocks, [r.tls_not_after for r in http])
        )


def _by_reason(zeros: Pairs, failed: dict[str, int]) -> Pairs:
    """Failures by every reason the kind of check can report (and any other that happened)."""
    return tuple((dict(zeros) | failed).items())


class _PoolFamilies:
    def __init__(self) -> None:
        self.state = Family(
            "healthd_real_server_state",
            "gauge",
            "State of a real server: 1 for the current state, 0 for the others",
        )
        self.transitions = Family(
            "healthd_real_server_transitions",
            "counter",
            "Changes of a real server's state, by the state entered",
        )
        self.since = Family(
            "healthd_real_server_last_transition_timestamp_seconds",
            "gauge",
            "Unix time the real server entered its current state (or healthd first saw it)",
        )
        self.downtime = Family(
            "healthd_real_server_downtime_seconds",
            "counter",
            "Seconds the real server has spent down, the current outage included",
        )
        self.configured = Family(
            "healthd_real_server_configured_weight",
            "gauge",
            "Weight of the real server in the config",
        )
        self.desired = Family(
            "healthd_real_server_desired_weight",
            "gauge",
            "Weight healthd wants in the kernel now (absent: it wants the real server out)",
        )
        self.kernel = Family(
            "healthd_real_server_kernel_weight",
            "gauge",
            "Weight in the kernel's IPVS table as of the latest reconcile pass "
            "(absent: not in the kernel)",
        )
        self.rs_info = Family(
            "healthd_real_server_info", "gauge", "Real server attributes (always 1)"
        )
        self.by_state = Family(
            "healthd_virtual_server_real_servers",
            "gauge",
            "Real servers of the virtual server in each state",
        )
        self.vs_info = Family(
            "healthd_virtual_server_info", "gauge", "Virtual server attributes (always 1)"
        )

    def all(self) -> list[Family]:
        return list(vars(self).values())


class PoolCollector:
    """Per real server and virtual server: states, their history, weights, info."""

    def __init__(
        self,
        sources: Sources,
        tracker: StateTracker,
        wall: Clock,
        mono: Clock,
        layouts: Layouts | None = None,
    ) -> None:
        self._sources = sources
        self._tracker = tracker
        self._wall = wall
        self._mono = mono
        self._families = _PoolFamilies()
        self._layouts = Layouts() if layouts is None else layouts

    def pieces(self) -> Iterator[bytes]:
        """The families' text, a piece at a time (``text.py``)."""
        src = self._sources
        config, states = src.config(), src.states()
        lay = self._layouts.servers(config)
        mono = self._mono()
        self._tracker.update(states, self._wall(), mono)  # catch overrides made meanwhile
        f = self._families
        for family in f.all():
            family.start()
        blocks = lay.rs_blocks
        current = [states.get(rs_id, "unknown") for rs_id in lay.rs_ids]
        yield from f.state.group_pieces(
            blocks, "state", [_STATE_SET.get(c) or _state_set(c) for c in current]
        )
        history = list(map(self._tracker.history.get, lay.rs_ids))
        yield from f.transitions.group_pieces(blocks, "to_state", [_entered(h) for h in history])
        yield from f.since.column_pieces(
            *present(blocks, [h.since_wall if h is not None else None for h in history])
        )
        yield from f.downtime.column_pieces(
            blocks, [h.downtime(mono) if h is not None else 0.0 for h in history]
        )
        yield from f.configured.column_pieces(blocks, lay.weights)
        wanted, in_kernel = _weights(lay, src.desired(), src.observed())
        yield from f.desired.column_pieces(*present(blocks, wanted))
        yield from f.kernel.column_pieces(*present(blocks, in_kernel))
        yield from f.rs_info.column_pieces(lay.rs_info_blocks, lay.rs_ones)
        yield from f.by_state.group_pieces(
            lay.vs_blocks, "state", [_by_state(current[a:b]) for a, b in lay.spans]
        )
        yield from f.vs_info.column_pieces(lay.vs_info_blocks, lay.vs_ones)


def _entered(history: RealServerHistory | None) -> Pairs:
    done = history.transitions if history is not None else None
    return tuple((name, done.get(name, 0)) for name in REAL_SERVER_STATES) if done else _NONE


def _by_state(states: list[str]) -> Pairs:
    """How many real servers are in each state (every known state, then any other seen)."""
    counts = dict.fromkeys(REAL_SERVER_STATES, 0)
    for state, n in Counter(states).items():
        counts[state] = counts.get(state, 0) + n
    return tuple(counts.items())


def _weights(
    lay: ServerLayout, desired: Desired, observed: Observed
) -> tuple[list[int | None], list[int | None]]:
    """Per real server: the weight healthd wants in the kernel, the weight in the kernel (None:
    wants it out, is not in the kernel)."""
    wants: list[DesiredRealServer | None] = []
    haves: list[ObservedRealServer | None] = []
    for vs_key, (start, end) in zip(lay.vs_keys, lay.spans, strict=True):
        want_vs, have_vs = desired.get(vs_key), observed.get(vs_key)
        keys = lay.rs_keys[start:end]
        wants += map(want_vs.real_servers.get, keys) if want_vs else repeat(None, end - start)
        haves += map(have_vs.real_servers.get, keys) if have_vs else repeat(None, end - start)
    wanted = [
        wanted_weight(want, have.spec if have else None) if want else None
        for want, have in zip(wants, haves, strict=True)
    ]
    return wanted, [have.spec.weight if have else None for have in haves]


def _state_set(current: str) -> tuple[tuple[str, int], ...]:
    return tuple((name, 1 if name == current else 0) for name in REAL_SERVER_STATES)


_STATE_SET = {state: _state_set(state) for state in REAL_SERVER_STATES}
_NONE = tuple((name, 0) for name in REAL_SERVER_STATES)
