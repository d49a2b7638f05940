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
from dataclasses import dataclass

from aiohttp import web

from healthd import api, policy
from healthd.checkspec import ProbeResult
from healthd.config.types import Config, OnStop
from healthd.ipvs.dryrun import DryRunIpvs
from healthd.ipvs.errors import IpvsError, IpvsUnavailable
from healthd.ipvs.port import IpvsPort
from healthd.metrics import Metrics, Sources
from healthd.model import Desired
from healthd.reconciler import PassResult, Reconciler
from healthd.scheduler import Scheduler
from healthd.state import HealthBook, Outcome, ProbeKey

log = logging.getLogger("healthd")


class StartupError(Exception):
    """healthd cannot start; the message is one sentence for the operator."""


@dataclass
class Daemon:
    config: Config
    port: IpvsPort
    dry_run: bool = False

    def __post_init__(self) -> None:
        self.book = HealthBook.from_config(self.config)
        self._desired: Desired = {}
        self.reconciler = Reconciler(
            port=self.port,
            desired=self.compute_desired,
            interval_s=self.config.reconcile.interval_s,
            min_interval_s=self.config.reconcile.min_interval_s,
            on_pass=self._on_pass,
            dry_run=self.dry_run,
        )
        self.metrics = Metrics(
            Sources(
                config=lambda: self.config,
                status=self.book.status,
                states=self.states,
                desired=lambda: self._desired,
                observed=lambda: self.reconciler.observed,
            )
        )
        for subscribers in self.book.probes.values():
            self.metrics.add_series(subscribers)
        self.scheduler = Scheduler(
            self.book.probes,
            self.on_result,
            max_concurrent=self.config.max_concurrent_probes,
        )
        self.stopping = asyncio.Event()

    def states(self) -> dict[tuple[str, str], str]:
        """What an operator sees for each real server (health, or later an override)."""
        return {rs_id: status.health.value for rs_id, status in self.book.status().items()}

    def compute_desired(self) -> Desired:
        self._desired = policy.desired(self.config, self.book.status())
        return self._desired

    def on_result(self, key: ProbeKey, result: ProbeResult) -> None:
        self.metrics.observe_probe(self.book.probes[key], result)
        outcome = self.book.record(key, result)
        self._log_outcome(key, outcome)
        if outcome.real_server_changes:
            self.reconciler.poke()

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

    def _on_pass(self, result: PassResult) -> None:
        self.metrics.observe_pass(result)

    async def run(self) -> None:
        """Run until ``stopping`` is set."""
        runner: web.AppRunner | None = None
        if self.config.metrics.enabled:
            app = api.make_app(self.metrics.registry, self.reconciler.ready.is_set)
            try:
                runner = await api.start(app, self.config.metrics.host, self.config.metrics.port)
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {self.config.metrics.host}:{self.config.metrics.port} "
                    f"for metrics: {exc.strerror or exc}"
                ) from exc
        mode = "dry-run (the kernel is not touched)" if self.dry_run else "live"
        log.info(
            "started in %s mode: %d virtual servers, %d real servers, %d distinct probes",
            mode,
            len(self.config.virtual_servers),
            sum(len(vs.real_servers) for vs in self.config.virtual_servers),
            len(self.book.probes),
        )
        probes = asyncio.create_task(self.scheduler.run(), name="scheduler")
        reconcile = asyncio.create_task(self.reconciler.run(), name="reconciler")
        self.reconciler.poke()  # first pass now: adopt the table, create what is missing
        stop = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {probes, reconcile, stop}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            log.info("stopping: cancelling probes, finishing the reconcile pass in flight")
            for task in (probes, reconcile, stop):
                task.cancel()
            for task in (probes, reconcile, stop):
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
            if runner is not None:
                await runner.cleanup()
            log.info("stopped")


async def open_port(config: Config, dry_run: bool) -> IpvsPort:
    from healthd.ipvs.netlink import NetlinkIpvs

    keys = [vs.key for vs in config.virtual_servers]
    if dry_run:
        try:
            kernel: IpvsPort | None = await NetlinkIpvs.open()
        except IpvsError as exc:
            log.info("dry-run: starting from an empty table (%s)", exc)
            kernel = None
        return await DryRunIpvs.seeded_from(kernel, keys)
    try:
        return await NetlinkIpvs.open()
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
    try:
        await daemon.run()
    except StartupError:
        await port.close()
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _stop(daemon: Daemon, sig: signal.Signals) -> None:
    log.info("received %s", sig.name)
    daemon.stopping.set()
