"""Custom collectors: render the latest snapshots as metric families at scrape time.

They read only in-memory snapshots (config, health book, last desired table, the reconciler's
last kernel dump, the records in ``records.py``), never netlink, so a scrape never waits on the
kernel.  Label sets follow the current config: a real server or check that leaves the config
leaves the exposition with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

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
from healthd.model import Desired, Observed
from healthd.overrides import Override
from healthd.plan import wanted_weight
from healthd.policy import REAL_SERVER_STATES, RealServerStatus

CHECK = ["virtual_server", "real_server", "check"]
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


@dataclass
class _CheckFamilies:
    attempts: CounterMetricFamily
    failures: CounterMetricFamily
    duration: HistogramMetricFamily
    last_attempt: GaugeMetricFamily
    last_success: GaugeMetricFamily
    consecutive: GaugeMetricFamily
    interval: GaugeMetricFamily
    timeout: GaugeMetricFamily
    http_status: GaugeMetricFamily
    cert_expiry: GaugeMetricFamily

    @classmethod
    def new(cls) -> _CheckFamilies:
        c, g = CounterMetricFamily, GaugeMetricFamily
        return cls(
            attempts=c("healthd_check_attempts", "Probes run for this check", labels=CHECK),
            failures=c(
                "healthd_check_failures",
                "Probes that failed, by reason (timeout, refused, status, ...)",
                labels=[*CHECK, "reason"],
            ),
            duration=HistogramMetricFamily(
                "healthd_check_duration_seconds",
                "Duration of each probe, failed ones included (a timeout counts as the timeout)",
                labels=CHECK,
            ),
            last_attempt=g(
                "healthd_check_last_attempt_timestamp_seconds",
                "Unix time of the latest probe (0: none yet)",
                labels=CHECK,
            ),
            last_success=g(
                "healthd_check_last_success_timestamp_seconds",
                "Unix time of the latest successful probe (0: none yet)",
                labels=CHECK,
            ),
            consecutive=g(
                "healthd_check_consecutive_failures",
                "Failed probes in a row, up to now (0 after a success)",
                labels=CHECK,
            ),
            interval=g("healthd_check_interval_seconds", "Configured probe interval", labels=CHECK),
            timeout=g("healthd_check_timeout_seconds", "Configured probe timeout", labels=CHECK),
            http_status=g(
                "healthd_check_http_status_code",
                "HTTP status of the latest response (HTTP checks; 0: no response)",
                labels=CHECK,
            ),
            cert_expiry=g(
                "healthd_check_tls_cert_expiry_timestamp_seconds",
                "notAfter of the latest server certificate seen, as Unix time (HTTPS checks)",
                labels=CHECK,
            ),
        )

    def all(self) -> list[Metric]:
        return [getattr(self, f.name) for f in fields(self)]


class ChecksCollector:
    """Per (virtual server, real server, check): counters, duration histogram, latest values."""

    def __init__(
        self,
        config: Callable[[], Config],
        records: Mapping[CheckId, CheckRecord],
        buckets: tuple[float, ...],
    ) -> None:
        self._config = config
        self._records = records
        self._buckets = buckets

    def describe(self) -> Iterable[Metric]:
        return _CheckFamilies.new().all()

    def collect(self) -> Iterable[Metric]:
        f = _CheckFamilies.new()
        blank = CheckRecord(Histogram(self._buckets))
        for check_id, check in checks_of(self._config()):
            names = list(check_id)
            record = self._records.get(check_id, blank)
            f.attempts.add_metric(names, record.attempts)
            reasons = dict.fromkeys(failure_reasons(check.spec), 0) | record.failures
            for reason, count in reasons.items():
                f.failures.add_metric([*names, reason], count)
            h = record.duration
            buckets = [(str(float(b)), c) for b, c in zip(h.bounds, h.cumulative, strict=True)]
            f.duration.add_metric(names, [*buckets, ("+Inf", h.count)], h.total)
            f.last_attempt.add_metric(names, record.last_attempt)
            f.last_success.add_metric(names, record.last_success)
            f.consecutive.add_metric(names, record.consecutive_failures)
            f.interval.add_metric(names, check.timing.interval_s)
            f.timeout.add_metric(names, check.timing.timeout_s)
            if isinstance(check.spec, HttpCheck):
                f.http_status.add_metric(names, record.http_status)
                if record.tls_not_after is not None:
                    f.cert_expiry.add_metric(names, record.tls_not_after)
        return f.all()


@dataclass
class _PoolFamilies:
    state: GaugeMetricFamily
    transitions: CounterMetricFamily
    since: GaugeMetricFamily
    downtime: CounterMetricFamily
    configured: GaugeMetricFamily
    desired: GaugeMetricFamily
    kernel: GaugeMetricFamily
    rs_info: GaugeMetricFamily
    by_state: GaugeMetricFamily
    vs_info: GaugeMetricFamily

    @classmethod
    def new(cls) -> _PoolFamilies:
        c, g = CounterMetricFamily, GaugeMetricFamily
        return cls(
            state=g(
                "healthd_real_server_state",
                "State of a real server: 1 for the current state, 0 for the others",
                labels=[*REAL_SERVER, "state"],
            ),
            transitions=c(
                "healthd_real_server_transitions",
                "Changes of a real server's state, by the state entered",
                labels=[*REAL_SERVER, "to_state"],
            ),
            since=g(
                "healthd_real_server_last_transition_timestamp_seconds",
                "Unix time the real server entered its current state (or healthd first saw it)",
                labels=REAL_SERVER,
            ),
            downtime=c(
                "healthd_real_server_downtime_seconds",
                "Seconds the real server has spent down, the current outage included",
                labels=REAL_SERVER,
            ),
            configured=g(
                "healthd_real_server_configured_weight",
                "Weight of the real server in the config",
                labels=REAL_SERVER,
            ),
            desired=g(
                "healthd_real_server_desired_weight",
                "Weight healthd wants in the kernel now (absent: it wants the real server out)",
                labels=REAL_SERVER,
            ),
            kernel=g(
                "healthd_real_server_kernel_weight",
                "Weight in the kernel's IPVS table as of the latest reconcile pass "
                "(absent: not in the kernel)",
                labels=REAL_SERVER,
            ),
            rs_info=g(
                "healthd_real_server_info",
                "Real server attributes (always 1)",
                labels=[*REAL_SERVER, "address", "port", "forwarding"],
            ),
            by_state=g(
                "healthd_virtual_server_real_servers",
                "Real servers of the virtual server in each state",
                labels=[*VIRTUAL_SERVER, "state"],
            ),
            vs_info=g(
                "healthd_virtual_server_info",
                "Virtual server attributes (always 1)",
                labels=[*VIRTUAL_SERVER, *VS_INFO],
            ),
        )

    def all(self) -> list[Metric]:
        return [getattr(self, f.name) for f in fields(self)]


VS_INFO = ["address", "port", "protocol", "fwmark", "scheduler", "forwarding"]


class PoolCollector:
    """Per real server and virtual server: states, their history, weights, info."""

    def __init__(self, sources: Sources, tracker: StateTracker, wall: Clock, mono: Clock) -> None:
        self._sources = sources
        self._tracker = tracker
        self._wall = wall
        self._mono = mono

    def describe(self) -> Iterable[Metric]:
        return _PoolFamilies.new().all()

    def collect(self) -> Iterable[Metric]:
        src = self._sources
        config, states = src.config(), src.states()
        desired, observed = src.desired(), src.observed()
        mono = self._mono()
        self._tracker.update(states, self._wall(), mono)  # catch overrides made meanwhile
        f = _PoolFamilies.new()
        for vs in config.virtual_servers:
            want_vs, have_vs = desired.get(vs.key), observed.get(vs.key)
            counts = dict.fromkeys(REAL_SERVER_STATES, 0)
            for rs in vs.real_servers:
                names = [vs.name, rs.name]
                current = states.get((vs.name, rs.name), "unknown")
                counts[current] = counts.get(current, 0) + 1
                for name in REAL_SERVER_STATES:
                    f.state.add_metric([*names, name], 1.0 if name == current else 0.0)
                history = self._tracker.get((vs.name, rs.name))
                done = history.transitions if history else {}
                for name in REAL_SERVER_STATES:
                    f.transitions.add_metric([*names, name], done.get(name, 0))
                if history is not None:
                    f.since.add_metric(names, history.since_wall)
                f.downtime.add_metric(names, history.downtime(mono) if history else 0.0)
                f.configured.add_metric(names, rs.weight)
                have = have_vs.real_servers.get(rs.key) if have_vs else None
                want = want_vs.real_servers.get(rs.key) if want_vs else None
                weight = wanted_weight(want, have.spec if have else None) if want else None
                if weight is not None:
                    f.desired.add_metric(names, weight)
                if have is not None:
                    f.kernel.add_metric(names, have.spec.weight)
                f.rs_info.add_metric([*names, rs.address, str(rs.port), rs.forwarding.value], 1)
            for name, count in counts.items():
                f.by_state.add_metric([vs.name, name], count)
            f.vs_info.add_metric([vs.name, *_vs_info(vs)], 1)
        return f.all()


def _vs_info(vs: VirtualServerConfig) -> list[str]:
    key = vs.key
    forwarding = ",".join(sorted({rs.forwarding.value for rs in vs.real_servers}))
    protocol = key.protocol.value if key.protocol else ""
    return [key.address, str(key.port), protocol, str(key.fwmark), vs.spec.scheduler, forwarding]
