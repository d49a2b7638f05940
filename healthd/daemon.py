"""Wiring: config -> probes -> health -> policy -> reconcile -> kernel, plus metrics and signals.

    Scheduler --ProbeResult--> HealthBook.record (pure) --changes--> log, metrics, reconciler.poke()
    Reconciler pass: policy.desired(config, status) -> IpvsPort.dump -> plan -> IpvsPort.apply
    aiohttp: /metrics reads snapshots (book, last desired, last observed); /healthz reads readiness

Stop (SIGTERM/SIGINT): probes are cancelled (each cleans up its socket or process group), the
reconcile pass in flight finishes, and the table is left as it is unless ``reconcile.on_stop`` is
``remove``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from healthd import api, statefile
from healthd.checkspec import ProbeResult
from healthd.config.types import Config, OnStop
from healthd.control import server as control
from healthd.host import Host
from healthd.ipvs.dryrun import DryRunIpvs
from healthd.ipvs.errors import IpvsError, IpvsUnavailable
from healthd.ipvs.port import IpvsPort
from healthd.metrics import Metrics, Sources, TimedPort
from healthd.model import Desired
from healthd.operations import Operations, settle_heap
from healthd.overrides import RealServerId, unexpired
from healthd.probes.native import QuietCount
from healthd.reconciler import PassResult, Reconciler
from healthd.runtime import Runtime
from healthd.scheduler import Quiet
from healthd.serving import web
from healthd.state import NO_CHANGE, HealthBook, Outcome, ProbeKey
from healthd.workers import scheduler_for

log = logging.getLogger("healthd")


class StartupError(Exception):
    """healthd cannot start; the message is one sentence for the operator."""


@dataclass
class Daemon(Operations):
    config: Config
    port: IpvsPort
    dry_run: bool = False

    def __post_init__(self) -> None:
        self.started_at = time.time()
        self.runtime = Runtime(self.config, now=self.started_at)
        for line in self.runtime.restore(statefile.load(self.config.state_file), time.time()):
            log.warning("saved state: dropped %s", line)
        self._expiry: asyncio.TimerHandle | None = None
        self._drained: set[tuple[str, str]] = set()
        self._overridden: set[RealServerId] = set()  # real servers with an override, last pass
        # settle the heap again once every probe has run (see _on_pass): scheduler.completed
        self._settle_at: int | None = None
        self._runner_shape = (0, 0)  # the probes' worker processes and engine threads, last pass
        self.reconciler = Reconciler(
            # metrics: every kernel request counted and timed by operation
            port=TimedPort(self.port, lambda op, s, ok: self.metrics.observe_request(op, s, ok)),
            desired=self.compute_desired,
            interval_s=self.config.reconcile.interval_s,
            min_interval_s=self.config.reconcile.min_interval_s,
            on_pass=self._on_pass,
            # host: kernel_op events (a lambda: self.host is made below)
            on_op=lambda op, error: self.host.kernel_op(op, error),
            dry_run=self.dry_run,
        )
        self.metrics = Metrics(
            Sources(
                config=lambda: self.config,
                status=lambda: self.book.status(),
                states=self.states,
                desired=lambda: self.runtime.last_desired,
                observed=lambda: self.reconciler.observed,
                overrides=lambda: unexpired(self.runtime.overrides, time.time()),
                in_flight=lambda: self.scheduler.in_flight,
                probe_workers=lambda: self.scheduler.workers,
                probe_engine_threads=lambda: self.scheduler.engine_threads,
            )
        )
        self.metrics.sync_series(self.config)
        self.scheduler = scheduler_for(  # probes.workers > 0: probes in child processes
            self.config.probe_workers,
            self.book.probes,
            self.on_result,
            max_concurrent=self.config.max_concurrent_probes,
            on_delay=self.metrics.observe_schedule_delay,
            on_delays=self.metrics.merge_schedule_delays,
            quiet=Quiet(
                settled=self._settled,
                counted=self._counted,
                delays=self.metrics.merge_schedule_delays,
                duration_bounds=self.metrics.duration_buckets,
            ),
            engine_threads=self.config.probe_engine_threads,
        )
        self.stopping = asyncio.Event()
        # host: systemd notify/watchdog, the event log, notify commands (healthd/host.py)
        self.host = Host(lambda: self.config, lambda: self.runtime.servers(), dry_run=self.dry_run)

    @property
    def book(self) -> HealthBook:
        return self.runtime.book

    def states(self, only: Collection[RealServerId] | None = None) -> dict[RealServerId, str]:
        """What an operator sees for each real server (or ``only`` these): health, or an
        override's state."""
        return self.runtime.states(self.reconciler.observed, time.time(), only)

    def compute_desired(self) -> Desired:
        return self.runtime.desired(time.time())

    def on_result(self, key: ProbeKey, result: ProbeResult) -> None:
        runtime = self.runtime
        outcome = runtime.record(key, result, time.time())
        if outcome is None:
            return  # the probe left the config with a reload
        self.metrics.observe_probe(runtime.book.probes[key], result)
        if outcome is NO_CHANGE:
            return  # nearly every result: the same verdict again
        self._log_outcome(key, outcome)
        if outcome.real_server_changes:
            changed = [c.real_server for c in outcome.real_server_changes]
            self.metrics.refresh_states(self.states(changed))  # metrics: count it now
            self.reconciler.poke()
        self.host.on_outcome(self.book, key, outcome)  # host: state_change events, notify

    def _settled(self, key: ProbeKey, result: ProbeResult) -> bool:
        """Whether more successes like ``result`` would change nothing but counts (``Quiet``)."""
        return self.runtime.book.settled(key, result)

    def _counted(self, counted: Sequence[tuple[ProbeKey, QuietCount]]) -> None:
        """Successes the C engine counted since the last drain, a slice of checks (``Quiet``):
        per check the health book's latest duration and the check's metrics, in one loop (a
        drain before a scrape walks every quiet check: ~5 µs each as separate calls)."""
        observe = self.metrics.observe_successes
        for subscribers, count in self.runtime.book.note_durations(counted):
            observe(subscribers, count.n, count.total_s, count.counts, count.last_end_wall)

    def _exposition(self) -> Iterator[bytes | asyncio.Future[None]]:
        """/metrics: the quiet checks' counts made current first (``Quiet``), a slice at a time
        (an empty piece: the event loop's turn), then the exposition."""
        for step in self.scheduler.drain_slices():
            yield b"" if step is None else step  # a future: the probe workers' counts
        yield from self.metrics.pieces()

    def _log_outcome(self, key: ProbeKey, outcome: Outcome) -> None:
        change = outcome.check_change
        if change is not None:
            users = ", ".join(
                f"{s.virtual_server}/{s.real_server}/{s.check}" for s in self.book.probes[key]
            )
            log.info(
                "check %s: %s -> %s (%s) [%s]",
                key.describe(),
                change.before.value,
                change.after.value,
                change.result.detail,
                users,
            )
        for rs_change in outcome.real_server_changes:
            vs_name, rs_name = rs_change.real_server
            log.info(
                "real server %s/%s: %s -> %s because %s",
                vs_name,
                rs_name,
                rs_change.before.health.value,
                rs_change.after.health.value,
                rs_change.after.why,
            )

    async def _on_pass(self, result: PassResult) -> None:
        """After every pass: metrics, systemd, drains.  Each step walks every real server (5 ms
        or more at 10 000 of them); the probes due get the loop between steps."""
        self.metrics.observe_pass(result)
        if self._settle_at is not None and self.scheduler.completed >= self._settle_at:
            # Every probe has a result, its metrics, and this pass its tables: what stays
            # from here on leaves the garbage collector's passes (settle_heap).
            self._settle_at = None
            settle_heap()
        shape = (self.scheduler.workers, self.scheduler.engine_threads)
        if shape != self._runner_shape:
            # the probes moved (probes.workers / engine_threads: auto): the runner they left is
            # freed, and what it held goes back to the system; the new one's slots are frozen
            self._runner_shape = shape
            settle_heap()
        await asyncio.sleep(0)
        # states and the metrics' copy of them in one step: a health change handled between
        # the two would be overwritten by the older states until the next pass
        states = self.states()
        # metrics: overrides, drains, expiries since, for the real servers with an override
        # now or at the last pass (health changes are counted as they come, in on_result;
        # every real server at the start and after a reload, in Metrics.sync_series)
        shown = self._overridden | self.runtime.overrides.keys()
        self.metrics.refresh_states({rs_id: states[rs_id] for rs_id in shown if rs_id in states})
        self._overridden = set(self.runtime.overrides)
        await asyncio.sleep(0)
        # host: READY=1 after the first good pass, STATUS= summary
        self.host.on_pass(result, states, self.reconciler.ready.is_set())
        if result.ok:
            await asyncio.sleep(0)
            if self.runtime.forget_departed(self.reconciler.observed):
                self._save_state()
            self._note_drains(states)

    def _note_drains(self, states: Mapping[RealServerId, str]) -> None:
        """Log once when a drained real server has no connection left.  Only a drain override
        shows "drained": the real servers with one, and those drained before, are looked at (not
        every real server, every pass)."""
        for rs_id in self._drained | self.runtime.overrides.keys():
            state = states.get(rs_id)
            if state == "drained" and rs_id not in self._drained:
                log.info("real server %s/%s: drain complete, no connection left", *rs_id)
            if state != "drained":
                self._drained.discard(rs_id)
            else:
                self._drained.add(rs_id)

    async def run(self) -> None:
        """Run until ``stopping`` is set."""
        runner: web.AppRunner | None = None
        if self.config.metrics.enabled:
            app = api.make_app(self._exposition, self.reconciler.ready.is_set)
            try:
                runner = await api.start(app, self.config.metrics.host, self.config.metrics.port)
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {self.config.metrics.host}:{self.config.metrics.port} "
                    f"for metrics: {exc.strerror or exc}"
                ) from exc
        control_runners: list[web.AppRunner] = []
        if self.config.control.enabled:
            try:
                control_runners = await control.start(self, self.config.control)
            except OSError as exc:
                if runner is not None:
                    await runner.cleanup()
                raise StartupError(
                    f"cannot serve the control API on {self.config.control.socket}: "
                    f"{exc.strerror or exc}"
                ) from exc
        self._arm_expiry()
        mode = "dry-run (the kernel is not touched)" if self.dry_run else "live"
        log.info(
            "started in %s mode: %d virtual servers, %d real servers, %d distinct probes",
            mode,
            len(self.config.virtual_servers),
            sum(len(vs.real_servers) for vs in self.config.virtual_servers),
            len(self.book.probes),
        )
        self._settle()
        probes = asyncio.create_task(self.scheduler.run(), name="scheduler")
        reconcile = asyncio.create_task(self.reconciler.run(), name="reconciler")
        self.reconciler.poke()  # first pass now: adopt the table, create what is missing
        stop = asyncio.create_task(self.stopping.wait())
        lag = asyncio.create_task(self.metrics.watch_event_loop(), name="loop-lag")  # metrics
        # host: WATCHDOG=1 only while probes complete (a stalled scheduler gets restarted)
        feed = asyncio.create_task(self.host.watchdog(lambda: self.scheduler.last_progress))
        try:
            done, _ = await asyncio.wait(
                {probes, reconcile, stop}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            log.info("stopping: cancelling probes, finishing the reconcile pass in flight")
            self.host.stopping()  # host: STOPPING=1
            for task in (probes, reconcile, stop, lag, feed):
                task.cancel()
            for task in (probes, reconcile, stop, lag, feed):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.reconciler.finish()
            if self.config.reconcile.on_stop is OnStop.REMOVE:
                result = await self.reconciler.teardown()
                log.info(
                    "on_stop remove: %d operations, %d failed",
                    len(result.applied),
                    len(result.failed),
                )
            await self.port.close()
            await control.stop(control_runners, self.config.control)
            if runner is not None:
                await runner.cleanup()
            await self.host.close()  # host: running notify commands, the event log
            log.info("stopped")


async def open_port(config: Config, dry_run: bool) -> IpvsPort:
    # pyroute2 by default; "raw": the same contract at ~1/20 of its CPU per message
    # (docs/benchmarks.md).  Only the one in use is imported (pyroute2 alone is ~10 MB).
    open_kernel: Callable[[], Awaitable[IpvsPort]]
    if config.reconcile.netlink == "raw":
        from healthd.ipvs.genl import GenlIpvs

        open_kernel = GenlIpvs.open
    else:
        from healthd.ipvs.netlink import NetlinkIpvs

        open_kernel = NetlinkIpvs.open

    keys = [vs.key for vs in config.virtual_servers]
    if dry_run:
        try:
            kernel: IpvsPort | None = await open_kernel()
        except IpvsError as exc:
            log.info("dry-run: starting from an empty table (%s)", exc)
            kernel = None
        return await DryRunIpvs.seeded_from(kernel, keys)
    try:
        return await open_kernel()
    except IpvsUnavailable as exc:
        raise StartupError(str(exc)) from exc
    except IpvsError as exc:
        raise StartupError(f"cannot use IPVS: {exc}") from exc


async def main(config: Config, *, dry_run: bool) -> None:
    port = await open_port(config, dry_run)
    daemon = Daemon(config, port, dry_run=dry_run)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, daemon, sig)
    reloads: set[asyncio.Task[tuple[bool, str]]] = set()

    def _reload() -> None:
        log.info("received SIGHUP: reloading %s", daemon.config.path)
        task = asyncio.create_task(daemon.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, _reload)
    try:
        await daemon.run()
    except StartupError:
        await port.close()
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _stop(daemon: Daemon, sig: signal.Signals) -> None:
    log.info("received %s", sig.name)
    daemon.stopping.set()
