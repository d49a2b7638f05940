"""The daemon's side effects on the host other than IPVS: systemd, the event log, notify commands.

The daemon calls a handful of hooks; each is cheap and never blocks or raises for the host's
fault:

- ``on_outcome`` after every recorded probe result: ``state_change`` events (per check and per
  real server), ``notify`` commands of real servers and pools;
- ``kernel_op`` as the kernel answers each operation of a pass: a ``kernel_op`` event;
- ``on_pass`` after every reconcile pass: ``READY=1`` after the first successful pass, a
  one-line ``STATUS=``;
- ``watchdog(progress)``: the task that feeds systemd's watchdog while probes complete;
- ``reload_started``/``reload_finished`` around a reload, ``stopping``/``close`` at stop.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial

from healthd import systemd
from healthd.config.types import Config, RealServerConfig, VirtualServerConfig
from healthd.events import EventLog
from healthd.model import Health, Op
from healthd.notify import Notifier
from healthd.policy import REAL_SERVER_STATES, UNKNOWN, RealServerStatus
from healthd.reconciler import PassResult
from healthd.state import HealthBook, Outcome, ProbeKey, RealServerId


def summary(config: Config, states: Mapping[tuple[str, str], str], ready: bool) -> str:
    """``ready: 2 virtual servers, 5 real servers: 4 up, 1 down`` (systemctl status)."""
    counts = Counter(states.values())
    known = [s for s in REAL_SERVER_STATES if counts[s]]
    parts = [f"{counts[s]} {s}" for s in known + sorted(set(counts) - set(REAL_SERVER_STATES))]
    text = f"{len(config.virtual_servers)} virtual servers, {len(states)} real servers"
    return f"{'ready' if ready else 'starting'}: {text}" + (
        f": {', '.join(parts)}" if parts else ""
    )


ServerIndex = Mapping[tuple[str, str], tuple[VirtualServerConfig, RealServerConfig]]


class Host:
    def __init__(
        self,
        config: Callable[[], Config],
        servers: Callable[[], ServerIndex],
        *,
        dry_run: bool = False,
    ) -> None:
        self._config = config
        self._servers = servers  # (vs, rs) names -> their config (the runtime's index)
        self._dry_run = dry_run
        self.events = EventLog(config().events.file)
        self.notifier = Notifier(
            events=self.events, user=lambda: self._config().scripts.user, dry_run=dry_run
        )
        self._ready_sent = False
        self._status = ""
        self._since = time.monotonic()  # the watchdog counts probe progress from here at least

    # ---- probes --------------------------------------------------------------------------------

    def on_outcome(self, book: HealthBook, key: ProbeKey, outcome: Outcome) -> None:
        change = outcome.check_change
        if change is not None:
            for s in book.probes.get(key, ()):
                self.events.state_change(
                    virtual_server=s.virtual_server,
                    real_server=s.real_server,
                    check=s.check,
                    before=change.before.value,
                    after=change.after.value,
                    reason=change.result.detail,
                )
        if not outcome.real_server_changes:
            return
        servers = self._servers()
        touched: dict[str, VirtualServerConfig] = {}
        for rs_change in outcome.real_server_changes:
            vs_name, rs_name = rs_change.real_server
            after = rs_change.after
            self.events.state_change(
                virtual_server=vs_name,
                real_server=rs_name,
                check=None,
                before=rs_change.before.health.value,
                after=after.health.value,
                reason=after.why,
            )
            found = servers.get(rs_change.real_server)
            if found is not None:
                vs, rs = found
                self.notifier.real_server(vs, rs, after.health, after.why)
                touched[vs.name] = vs
        status = book.status()
        for vs in touched.values():
            members = (status.get(rs_id, UNKNOWN).health for rs_id in vs.rs_ids)
            self.notifier.pool(vs, members, partial(_pool_reason, vs, status))

    # ---- reconcile -----------------------------------------------------------------------------

    def kernel_op(self, op: Op, error: str | None) -> None:
        """One operation as the kernel answered it (``error`` None: applied), at once: the event's
        time is the answer's, not the end of the pass."""
        self.events.kernel_op(op, ok=error is None, error=error, dry_run=self._dry_run)

    def on_pass(
        self, result: PassResult, states: Mapping[tuple[str, str], str], ready: bool
    ) -> None:
        if ready and not self._ready_sent:
            self._ready_sent = True
            systemd.ready()
        text = summary(self._config(), states, ready)
        if not result.ok:
            text += f"; last pass failed: {result.error or f'{len(result.failed)} operations'}"
        if text != self._status:
            self._status = text
            systemd.status(text)

    # ---- systemd watchdog, reload and stop -----------------------------------------------------

    async def watchdog(self, progress: Callable[[], float]) -> None:
        """Feed systemd's watchdog while ``progress()`` (``Scheduler.last_progress``) is recent."""
        await systemd.watchdog(
            lambda: max(progress(), self._since),
            lambda: systemd.stall_after_s(self._config()),
        )

    def reload_started(self) -> None:
        """Tell systemd a reload runs, and reopen the event log (logrotate sends SIGHUP)."""
        systemd.reloading()
        self.events.reopen()

    def reload_finished(self, ok: bool, message: str = "") -> None:
        """After a reload, valid or not (``config()`` must already return the new config)."""
        path = self._config().events.file
        if path != self.events.path:
            self.events.reopen(path, change=True)
        self._since = time.monotonic()  # new probes may not have completed one yet
        self.events.reload(ok=ok, error=None if ok else message)
        systemd.ready()
        self._status = ""  # the next pass tells systemd the new summary

    def stopping(self) -> None:
        systemd.stopping()

    async def close(self) -> None:
        """Let running notify commands finish briefly (then kill them); close the event log."""
        await self.notifier.close()
        self.events.close()


def _pool_reason(vs: VirtualServerConfig, status: Mapping[RealServerId, RealServerStatus]) -> str:
    members = [status.get(rs_id, UNKNOWN).health for rs_id in vs.rs_ids]
    return f"{members.count(Health.UP)} of {len(members)} real servers up"
