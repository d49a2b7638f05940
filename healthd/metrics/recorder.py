"""``Metrics``: healthd's Prometheus registry, and the calls the daemon makes as things happen.

Families by source (docs/metrics.md lists them all):

* probes: ``observe_probe`` updates per-check records, rendered by ``ChecksCollector``;
* real and virtual servers: ``PoolCollector`` renders states, weights and state history;
* the kernel: ``KernelCollector`` renders the reconciler's latest dump (no netlink at scrape);
* the daemon: plain prometheus_client instruments below (reconcile, netlink, loop lag, ...).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from healthd import __version__
from healthd.checkspec import ProbeResult
from healthd.config.types import Config
from healthd.histogram import DELAY_BUCKETS_S
from healthd.histogram import Histogram as Buckets
from healthd.ipvs.port import IpvsPort
from healthd.metrics.collectors import ChecksCollector, Clock, PoolCollector, Sources
from healthd.metrics.instrumented import NETLINK_OPERATIONS, TimedPort, watch_event_loop
from healthd.metrics.kernel import KernelCollector
from healthd.metrics.layout import Layouts, PooledId, checks_of
from healthd.metrics.overrides import OverrideCollector
from healthd.metrics.records import (
    CheckId,
    CheckRecord,
    RealServerId,
    StateTracker,
    duration_buckets,
)
from healthd.reconciler import PassResult
from healthd.state import HealthBook, Subscriber

RECONCILE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
NETLINK_BUCKETS_S = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025),
    *(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
LOOP_LAG_PERIOD_S = 0.5


def _max_timeout(config: Config) -> float:
    return max((check.timing.timeout_s for _, check in checks_of(config)), default=1.0)


class HistogramCollector:
    """One unlabelled histogram family from a ``healthd.histogram.Histogram``."""

    def __init__(self, name: str, documentation: str, histogram: Buckets) -> None:
        self._name, self._doc, self._histogram = name, documentation, histogram

    def collect(self) -> Iterator[HistogramMetricFamily]:
        h = self._histogram
        les = [floatToGoString(b) for b in h.bounds]  # type: ignore[no-untyped-call]
        buckets = list(zip(les, h.cumulative, strict=True))
        buckets.append(("+Inf", h.count))
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=h.total)


class Metrics:
    def __init__(
        self, sources: Sources, *, wall: Clock = time.time, mono: Clock = time.monotonic
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # they double the series
        self._sources = sources
        # Every Unix time exported is kept to the millisecond: Prometheus keeps its own so, and
        # a number of thousandths is written ~8x faster than any float (``_exposition.c``).
        self._wall: Clock = lambda: round(wall(), 3)
        self._mono = mono
        # Fixed for the life of the process, so every check's histogram has the same buckets.
        self.duration_buckets = duration_buckets(_max_timeout(sources.config()))
        self.records: dict[CheckId, CheckRecord] = {}
        # metrics.check_duration, fixed at start like the buckets: durations per check, or by
        # (virtual server, check) in ``pooled``, or not at all
        self.granularity = sources.config().metrics.check_duration
        self._pooling = self.granularity == "per_virtual_server"
        self.pooled: dict[PooledId, Buckets] = {}
        self.tracker = StateTracker()
        self.registry = r = CollectorRegistry(auto_describe=True)

        build = Gauge(
            "healthd_build_info",
            "healthd's version and Python's (always 1)",
            ["version", "python_version"],
            registry=r,
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.reload_ok = Gauge(
            "healthd_config_last_reload_successful",
            "1 if the latest config load (start or reload) succeeded, 0 if it was refused",
            registry=r,
        )
        self.reload_time = Gauge(
            "healthd_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful config load (start or reload)",
            registry=r,
        )
        self.passes = Counter("healthd_reconcile_passes", "Reconcile passes", registry=r)
        self.pass_errors = Counter(
            "healthd_reconcile_errors",
            "Reconcile passes that failed (the dump, or an operation, failed)",
            registry=r,
        )
        self.pass_duration = Histogram(
            "healthd_reconcile_duration_seconds",
            "Duration of a reconcile pass (dump, plan, apply)",
            buckets=RECONCILE_BUCKETS_S,
            registry=r,
        )
        self.last_success = Gauge(
            "healthd_reconcile_last_success_timestamp_seconds",
            "Unix time of the latest successful reconcile pass (0: none yet)",
            registry=r,
        )
        op = ["operation"]
        self.requests = Counter(
            "healthd_netlink_requests", "IPVS requests to the kernel", op, registry=r
        )
        self.request_failures = Counter(
            "healthd_netlink_request_failures",
            "IPVS requests that failed or timed out (EEXIST/ENOENT answers excluded)",
            op,
            registry=r,
        )
        self.request_duration = Histogram(
            "healthd_netlink_request_duration_seconds",
            "Duration of an IPVS request, answer included",
            op,
            buckets=NETLINK_BUCKETS_S,
            registry=r,
        )
        for operation in NETLINK_OPERATIONS:
            self.requests.labels(operation)
            self.request_failures.labels(operation)
            self.request_duration.labels(operation)
        self.loop_lag = Histogram(
            "healthd_event_loop_lag_seconds",
            f"How late the event loop runs a task due every {LOOP_LAG_PERIOD_S:g}s",
            buckets=DELAY_BUCKETS_S,
            registry=r,
        )
        # Every probe's delay, thousands a second, most of them from probe workers in batches
        # already bucketed: our own numbers, not a prometheus_client Histogram (a lock and two
        # increments per value).
        self.schedule_delay = Buckets(DELAY_BUCKETS_S)
        r.register(
            HistogramCollector(
                "healthd_check_schedule_delay_seconds",
                "How late probes start against their schedule (loop lag, concurrency limit)",
                self.schedule_delay,
            )
        )
        in_flight = Gauge("healthd_checks_in_flight", "Probes running now", registry=r)
        in_flight.set_function(lambda: float(sources.in_flight()))
        workers = Gauge(
            "healthd_probe_workers",
            "Worker processes running the probes (0: the daemon's own process; probes.workers)",
            registry=r,
        )
        workers.set_function(lambda: float(sources.probe_workers()))
        threads = Gauge(
            "healthd_probe_engine_threads",
            "Threads of the daemon's process running the C engine's checks (0: its event loop"
            " runs them; probes.engine_threads)",
            registry=r,
        )
        threads.set_function(lambda: float(sources.probe_engine_threads()))

        # The bulk (per check, per real server) is written by hand, see text.py; the rest here.
        layouts = Layouts()  # names and label blocks of the config, built once per config
        layouts.build(sources.config())  # now rather than at the first scrape
        self._bulk = (
            ChecksCollector(
                sources.config,
                self.records,
                self.duration_buckets,
                self.pooled,
                self.granularity,
                layouts,
            ),
            PoolCollector(sources, self.tracker, self._wall, mono, layouts),
            KernelCollector(sources.config, sources.observed, layouts),
        )
        r.register(OverrideCollector(sources.overrides))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.observe_reload(True)  # the config that started the daemon loaded

    def exposition(self) -> list[bytes]:
        """What /metrics answers: every family, in the Prometheus text format 0.0.4, in pieces
        to be sent one after the other (joined, they would be one more copy of it all)."""
        return list(self.pieces())

    def pieces(self) -> Iterator[bytes]:
        """The exposition, each piece written when it is asked for (``api.py`` gives the event
        loop back between two).  One at a time: the families are filled in place."""
        yield generate_latest(self.registry)
        for collector in self._bulk:
            yield from collector.pieces()

    # ---- series life cycle --------------------------------------------------------------

    def sync_series(self, source: Config | HealthBook) -> None:
        """Forget what belongs to names that left ``source`` (after a config load or reload).

        Series follow the current config by themselves (the collectors render its names), so this
        only drops the memory of removed checks and real servers: a name that comes back later
        starts from zero.  It also records the current states as the starting point.
        """
        if isinstance(source, HealthBook):
            checks = {
                (s.virtual_server, s.real_server, s.check)
                for subscribers in source.probes.values()
                for s in subscribers
            }
            real_servers = set(source.checks_of)
        else:
            checks = {check_id for check_id, _ in checks_of(source)}
            real_servers = {
                (vs.name, rs.name) for vs in source.virtual_servers for rs in vs.real_servers
            }
        for check_id in [c for c in self.records if c not in checks]:
            del self.records[check_id]
        pools = {(vs, check) for vs, _, check in checks}
        for pooled_id in [p for p in self.pooled if p not in pools]:
            del self.pooled[pooled_id]
        self.tracker.keep_only(real_servers)
        self.refresh_states()

    def refresh_states(self, states: Mapping[RealServerId, str] | None = None) -> None:
        """Count state changes now (the daemon calls it when a real server's state changed).

        ``states``: the states to compare (all or some real servers); default all, read now.
        """
        current = self._sources.states() if states is None else states
        self.tracker.update(current, self._wall(), self._mono())

    # ---- events -------------------------------------------------------------------------

    def observe_probe(self, subscribers: Iterable[Subscriber], result: ProbeResult) -> None:
        now = self._wall()
        for s in subscribers:
            self._record(s).observe(result, now)
            if self._pooling:
                self._pool(s).observe(result.duration_s)

    def observe_successes(
        self,
        subscribers: Iterable[Subscriber],
        n: int,
        total_s: float,
        counts: Sequence[int],
        last_wall: float,
    ) -> None:
        """``n`` successes that said what the check's latest result said, counted elsewhere
        (durations by ``duration_buckets``, summed; the latest ended at ``last_wall``): as
        ``n`` calls of ``observe_probe`` would leave the figures."""
        last_wall = round(last_wall, 3)  # to the millisecond, as ``self._wall``
        for s in subscribers:
            self._record(s).observe_successes(n, total_s, counts, last_wall)
            if self._pooling:
                self._pool(s).merge(counts, n, total_s)

    def _record(self, s: Subscriber) -> CheckRecord:
        """The figures of one (virtual server, real server, check): a Subscriber is that tuple."""
        record = self.records.get(s)
        if record is None:
            own = self.granularity == "per_real_server"
            record = self.records[s] = CheckRecord(Buckets(self.duration_buckets) if own else None)
        return record

    def _pool(self, s: Subscriber) -> Buckets:
        """The durations of ``s``'s virtual server and check (``per_virtual_server``)."""
        pool = (s.virtual_server, s.check)
        pooled = self.pooled.get(pool)
        if pooled is None:
            pooled = self.pooled[pool] = Buckets(self.duration_buckets)
        return pooled

    def observe_pass(self, result: PassResult) -> None:
        self.passes.inc()
        self.pass_duration.observe(result.duration_s)
        if result.ok:
            self.last_success.set(self._wall())
        else:
            self.pass_errors.inc()

    def observe_reload(self, ok: bool) -> None:
        """A config load finished: ``ok`` False when it was refused (the old config runs on)."""
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(self._wall())

    def observe_request(self, operation: str, duration_s: float, ok: bool) -> None:
        self.requests.labels(operation).inc()
        self.request_duration.labels(operation).observe(duration_s)
        if not ok:
            self.request_failures.labels(operation).inc()

    def observe_schedule_delay(self, delay_s: float) -> None:
        self.schedule_delay.observe(delay_s)

    def merge_schedule_delays(self, counts: Sequence[int], count: int, total_s: float) -> None:
        """A probe worker's batch of schedule delays, bucketed by ``DELAY_BUCKETS_S``."""
        self.schedule_delay.merge(counts, count, total_s)

    # ---- wiring helpers -----------------------------------------------------------------

    def instrument(self, port: IpvsPort) -> TimedPort:
        """``port``, with every request counted and timed."""
        return TimedPort(port, self.observe_request)

    async def watch_event_loop(self, period_s: float = LOOP_LAG_PERIOD_S) -> None:
        """Sample the event loop's lag until cancelled (the daemon runs it as a task)."""
        await watch_event_loop(self.loop_lag.observe, period_s)
