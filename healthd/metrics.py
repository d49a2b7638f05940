"""Prometheus metrics on healthd's own registry.

Probe counters and histograms are updated as results arrive; every (virtual_server, real_server,
check) series exists from config load so no first increment is lost.  Health state and weights
come from a custom collector that reads the latest snapshots (never netlink) at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric

from healthd import __version__
from healthd.checkspec import ProbeResult
from healthd.config.types import Config
from healthd.model import Desired, Observed
from healthd.plan import wanted_weight
from healthd.policy import REAL_SERVER_STATES, RealServerStatus
from healthd.reconciler import PassResult, op_kind
from healthd.state import Subscriber

LABELS = ("virtual_server", "real_server", "check")
PROBE_BUCKETS_S = (
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
)


@dataclass(frozen=True)
class Sources:
    """Where the collector reads its snapshots from (each call is cheap and non-blocking)."""

    config: Callable[[], Config]
    status: Callable[[], Mapping[tuple[str, str], RealServerStatus]]
    # (virtual server, real server) -> one of policy.REAL_SERVER_STATES
    states: Callable[[], Mapping[tuple[str, str], str]]
    desired: Callable[[], Desired]
    observed: Callable[[], Observed]


class StateCollector:
    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        config = self._sources.config()
        states = self._sources.states()
        desired = self._sources.desired()
        observed = self._sources.observed()
        labels = ["virtual_server", "real_server"]
        state = GaugeMetricFamily(
            "healthd_real_server_state",
            "Health state of a real server: 1 for the current state, 0 for the others",
            labels=[*labels, "state"],
        )
        configured = GaugeMetricFamily(
            "healthd_real_server_configured_weight",
            "Weight of a real server in the config",
            labels=labels,
        )
        wanted = GaugeMetricFamily(
            "healthd_real_server_desired_weight",
            "Weight healthd wants in the kernel (0 when it wants the real server absent)",
            labels=labels,
        )
        kernel = GaugeMetricFamily(
            "healthd_real_server_kernel_weight",
            "Weight in the kernel's IPVS table as of the latest reconcile pass",
            labels=labels,
        )
        for vs in config.virtual_servers:
            want_vs = desired.get(vs.key)
            have_vs = observed.get(vs.key)
            for rs in vs.real_servers:
                names = [vs.name, rs.name]
                current = states.get((vs.name, rs.name), "unknown")
                for name in REAL_SERVER_STATES:
                    state.add_metric([*names, name], 1.0 if name == current else 0.0)
                configured.add_metric(names, rs.weight)
                have = have_vs.real_servers.get(rs.key) if have_vs else None
                if want_vs is not None and rs.key in want_vs.real_servers:
                    weight = wanted_weight(
                        want_vs.real_servers[rs.key], have.spec if have else None
                    )
                    wanted.add_metric(names, weight or 0)
                if have is not None:
                    kernel.add_metric(names, have.spec.weight)
        yield from (state, configured, wanted, kernel)


class Metrics:
    def __init__(self, sources: Sources) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # _created series double the count and help nobody here
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.attempts = Counter("healthd_check_attempts", "Probes run", LABELS, registry=r)
        self.failures = Counter("healthd_check_failures", "Probes that failed", LABELS, registry=r)
        self.duration = Histogram(
            "healthd_check_duration_seconds",
            "Probe duration",
            LABELS,
            buckets=PROBE_BUCKETS_S,
            registry=r,
        )
        self.passes = Counter("healthd_reconcile_passes", "Reconcile passes", registry=r)
        self.pass_errors = Counter(
            "healthd_reconcile_errors", "Reconcile passes that failed", registry=r
        )
        self.pass_duration = Histogram(
            "healthd_reconcile_duration_seconds",
            "Reconcile pass duration",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0),
        )
        self.last_success = Gauge(
            "healthd_reconcile_last_success_timestamp_seconds",
            "Unix time of the latest successful reconcile pass",
            registry=r,
        )
        self.operations = Counter(
            "healthd_ipvs_operations", "Kernel IPVS operations applied", ["operation"], registry=r
        )
        self.operation_errors = Counter(
            "healthd_ipvs_operation_errors",
            "Kernel IPVS operations that failed",
            ["operation"],
            registry=r,
        )
        info = Gauge("healthd_build_info", "healthd version", ["version"], registry=r)
        info.labels(__version__).set(1)
        r.register(StateCollector(sources))

    def add_series(self, subscribers: Iterable[Subscriber]) -> None:
        for s in subscribers:
            names = (s.virtual_server, s.real_server, s.check)
            self.attempts.labels(*names)
            self.failures.labels(*names)
            self.duration.labels(*names)

    def observe_probe(self, subscribers: Iterable[Subscriber], result: ProbeResult) -> None:
        for s in subscribers:
            names = (s.virtual_server, s.real_server, s.check)
            self.attempts.labels(*names).inc()
            if not result.ok:
                self.failures.labels(*names).inc()
            self.duration.labels(*names).observe(result.duration_s)

    def observe_pass(self, result: PassResult) -> None:
        self.passes.inc()
        self.pass_duration.observe(result.duration_s)
        if result.ok:
            self.last_success.set(time.time())
        else:
            self.pass_errors.inc()
        for op in result.applied:
            self.operations.labels(op_kind(op)).inc()
        for op, _ in result.failed:
            self.operation_errors.labels(op_kind(op)).inc()
