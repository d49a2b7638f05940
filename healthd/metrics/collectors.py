"""Custom collectors: render the latest snapshots as metric families at scrape time.

They read only in-memory snapshots (config, health book, last desired table, the reconciler's
last kernel dump, the records in ``records.py``), never netlink, so a scrape never waits on the
kernel.  Label sets follow the current config: a real server or check that leaves the config
leaves the exposition with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from healthd.checkspec import HttpCheck
from healthd.config.types import CheckConfig, Config, VirtualServerConfig
from healthd.metrics.records import (
    CheckId,
    CheckRecord,
    Histogram,
    RealServerId,
    StateTracker,
    failure_reasons,
)
from healthd.metrics.text import Family, LabelBlocks, le_labels
from healthd.model import Desired, Observed
from healthd.overrides import Override
from healthd.plan import wanted_weight
from healthd.policy import REAL_SERVER_STATES, RealServerStatus

CHECK = ["virtual_server", "real_server", "check"]
PooledId = tuple[str, str]  # (virtual server, check): a duration histogram shared by a pool
REAL_SERVER = ["virtual_server", "real_server"]
VIRTUAL_SERVER = ["virtual_server"]
Clock = Callable[[], float]


def _no_probes_in_flight() -> int:
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
    in_flight: Callable[[], int] = _no_probes_in_flight
    overrides: Callable[[], Mapping[RealServerId, Override]] = _no_overrides


def checks_of(config: Config) -> Iterator[tuple[CheckId, CheckConfig]]:
    for vs in config.virtual_servers:
        for rs in vs.real_servers:
            for check in rs.checks:
                yield (vs.name, rs.name, check.name), check


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
    ) -> None:
        """``granularity`` is ``metrics.check_duration``; with ``per_virtual_server`` the
        durations come from ``pooled``, by (virtual server, check)."""
        self._config = config
        self._records = records
        self._buckets = buckets
        self._pooled = {} if pooled is None else pooled  # the live mapping, filled later
        self._granularity = granularity
        self._les = le_labels(buckets)
        self._labels = LabelBlocks(CHECK)
        self._pooled_labels = LabelBlocks(["virtual_server", "check"])
        self._families = _CheckFamilies()
        self._zeros: dict[tuple[str, ...], tuple[tuple[str, int], ...]] = {}

    def render(self) -> list[Family]:
        config = self._config()
        self._labels.forget_unless(config)
        f = self._families
        for family in f.all():
            family.start(config)
        blank = CheckRecord(Histogram(self._buckets))
        records, les = self._records, self._les
        for check_id, check in checks_of(config):
            b = self._labels(check_id)
            record = records.get(check_id, blank)
            f.attempts.add(b, record.attempts)
            f.failures.add_group(b, "reason", self._by_reason(check, record.failures))
            if record.duration is not None and self._granularity == "per_real_server":
                h = record.duration
                f.duration.add_histogram(b, les, h.cumulative, h.count, h.total)
            f.last_attempt.add(b, record.last_attempt)
            f.last_success.add(b, record.last_success)
            f.consecutive.add(b, record.consecutive_failures)
            f.interval.add_static(b, check.timing.interval_s)
            f.timeout.add_static(b, check.timing.timeout_s)
            if isinstance(check.spec, HttpCheck):
                f.http_status.add(b, record.http_status)
                if record.tls_not_after is not None:
                    f.cert_expiry.add(b, record.tls_not_after)
        if self._granularity == "per_virtual_server":
            self._pooled_labels.forget_unless(config)
            pools = dict.fromkeys((vs, check) for (vs, _, check), _ in checks_of(config))
            for pooled_id in pools:
                h = self._pooled.get(pooled_id) or Histogram(self._buckets)
                b = self._pooled_labels(pooled_id)
                f.duration.add_histogram(b, les, h.cumulative, h.count, h.total)
        return f.all()

    def _by_reason(self, check: CheckConfig, failed: dict[str, int]) -> tuple[tuple[str, int], ...]:
        """Failures by every reason the kind of check can report (and any other that happened)."""
        expected = failure_reasons(check.spec)
        if not failed:
            zeros = self._zeros.get(expected)
            if zeros is None:
                zeros = self._zeros[expected] = tuple((reason, 0) for reason in expected)
            return zeros
        counts = dict.fromkeys(expected, 0) | failed
        return tuple(counts.items())


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


VS_INFO = ["address", "port", "protocol", "fwmark", "scheduler", "forwarding"]
RS_INFO = ["address", "port", "forwarding"]


class PoolCollector:
    """Per real server and virtual server: states, their history, weights, info."""

    def __init__(self, sources: Sources, tracker: StateTracker, wall: Clock, mono: Clock) -> None:
        self._sources = sources
        self._tracker = tracker
        self._wall = wall
        self._mono = mono
        self._rs_labels = LabelBlocks(REAL_SERVER)
        self._rs_info = LabelBlocks([*REAL_SERVER, *RS_INFO])
        self._vs_labels = LabelBlocks(VIRTUAL_SERVER)
        self._vs_info = LabelBlocks([*VIRTUAL_SERVER, *VS_INFO])
        self._families = _PoolFamilies()

    def render(self) -> list[Family]:
        src = self._sources
        config, states = src.config(), src.states()
        desired, observed = src.desired(), src.observed()
        for blocks in (self._rs_labels, self._rs_info, self._vs_labels, self._vs_info):
            blocks.forget_unless(config)
        mono = self._mono()
        self._tracker.update(states, self._wall(), mono)  # catch overrides made meanwhile
        f = self._families
        for family in f.all():
            family.start(config)
        for vs in config.virtual_servers:
            want_vs, have_vs = desired.get(vs.key), observed.get(vs.key)
            counts = dict.fromkeys(REAL_SERVER_STATES, 0)
            for rs in vs.real_servers:
                rs_id = (vs.name, rs.name)
                b = self._rs_labels(rs_id)
                current = states.get(rs_id, "unknown")
                counts[current] = counts.get(current, 0) + 1
                history = self._tracker.get(rs_id)
                done = history.transitions if history else {}
                f.state.add_group(b, "state", _STATE_SET.get(current) or _state_set(current))
                entered = tuple((n, done.get(n, 0)) for n in REAL_SERVER_STATES) if done else _NONE
                f.transitions.add_group(b, "to_state", entered)
                if history is not None:
                    f.since.add(b, history.since_wall)
                f.downtime.add(b, history.downtime(mono) if history else 0.0)
                f.configured.add_static(b, rs.weight)
                have = have_vs.real_servers.get(rs.key) if have_vs else None
                want = want_vs.real_servers.get(rs.key) if want_vs else None
                weight = wanted_weight(want, have.spec if have else None) if want else None
                if weight is not None:
                    f.desired.add(b, weight)
                if have is not None:
                    f.kernel.add(b, have.spec.weight)
                info = (*rs_id, rs.address, str(rs.port), rs.forwarding.value)
                f.rs_info.add_static(self._rs_info(info), 1)
            vb = self._vs_labels((vs.name,))
            f.by_state.add_group(vb, "state", tuple(counts.items()))
            f.vs_info.add_static(self._vs_info((vs.name, *_vs_info(vs))), 1)
        return f.all()


def _state_set(current: str) -> tuple[tuple[str, int], ...]:
    return tuple((name, 1 if name == current else 0) for name in REAL_SERVER_STATES)


_STATE_SET = {state: _state_set(state) for state in REAL_SERVER_STATES}
_NONE = tuple((name, 0) for name in REAL_SERVER_STATES)


def _vs_info(vs: VirtualServerConfig) -> list[str]:
    key = vs.key
    forwarding = ",".join(sorted({rs.forwarding.value for rs in vs.real_servers}))
    protocol = key.protocol.value if key.protocol else ""
    return [key.address, str(key.port), protocol, str(key.fwmark), vs.spec.scheduler, forwarding]
