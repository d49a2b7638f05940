"""Operator actions on a running daemon: status, overrides (with expiry and the state file) and
reload as a diff.  The control API calls these; they run on the event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import TYPE_CHECKING, Any

from healthd import __version__, config, memory, scriptsec, statefile, status
from healthd.config.types import Config
from healthd.overrides import Override, OverrideKind, next_expiry

if TYPE_CHECKING:
    from healthd.host import Host
    from healthd.metrics import Metrics
    from healthd.reconciler import Reconciler
    from healthd.runtime import Runtime
    from healthd.scheduler import ProbeRunner

log = logging.getLogger("healthd")


class Operations:
    """Mixed into ``Daemon``: the attributes below are the daemon's."""

    config: Config
    dry_run: bool
    started_at: float
    runtime: Runtime
    reconciler: Reconciler
    scheduler: ProbeRunner
    metrics: Metrics
    host: Host
    _expiry: asyncio.TimerHandle | None
    _settle_at: int | None

    def status(self) -> dict[str, Any]:
        daemon = {
            "version": __version__,
            "config": self.config.path,
            "dry_run": self.dry_run,
            "ready": self.reconciler.ready.is_set(),
            "started_at": self.started_at,
        }
        return status.build(self.runtime, self.reconciler.observed, time.time(), daemon)

    def override(
        self,
        virtual_server: str,
        real_server: str,
        action: str,
        *,
        owner: str,
        weight: int | None = None,
        ttl_s: float | None = None,
        reason: str = "",
    ) -> str:
        now = time.time()
        new = None
        if action != "ready":
            new = Override(
                kind=OverrideKind(action),
                owner=owner,
                reason=reason,
                created_at=now,
                expires_at=None if ttl_s is None else now + ttl_s,
                weight=weight,
            )
        previous = self.runtime.overrides.get((virtual_server, real_server))
        self.runtime.set_override(virtual_server, real_server, new)
        if new is None:
            text = f"{virtual_server}/{real_server}: back to health-driven control"
            if previous is not None:
                text += f" (was {previous.describe(now)})"
        else:
            text = f"{virtual_server}/{real_server}: {new.describe(now)}"
        log.info("override: %s", text)
        self.host.events.override(
            virtual_server=virtual_server,
            real_server=real_server,
            action=action,
            weight=weight,
            owner=owner,
            reason=reason,
            expires=None if new is None or new.expires_at is None else _iso(new.expires_at),
        )
        self._save_state()
        self._arm_expiry()
        self.reconciler.poke()
        return text

    def _save_state(self) -> None:
        try:
            statefile.save(self.config.state_file, self.runtime.saved_state())
        except OSError as exc:
            log.error("cannot save state to %s: %s", self.config.state_file, exc)

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        when = next_expiry(self.runtime.overrides)
        if when is not None:
            delay = max(0.0, when - time.time()) + 0.01
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        for (vs, rs), override in self.runtime.expire(time.time()):
            log.info(
                "override: %s/%s: %s expired, back to health-driven control",
                vs,
                rs,
                override.describe(),
            )
            self.host.events.override(
                virtual_server=vs,
                real_server=rs,
                action="expired",
                owner=override.owner,
                reason=override.reason,
            )
        self._save_state()
        self._arm_expiry()
        self.reconciler.poke()

    async def reload(self) -> tuple[bool, str]:
        """Load the config file again and apply only the difference; invalid: nothing changes."""
        self.host.reload_started()
        ok, message = self._reload()
        self.metrics.observe_reload(ok)
        self.host.reload_finished(ok, message)
        return ok, message

    def _reload(self) -> tuple[bool, str]:
        path = self.config.path
        try:
            new = config.load(path)
        except config.ConfigError as exc:
            for issue in exc.issues:
                log.error("reload refused: %s", issue)
            return False, "reload refused, the running config is unchanged:\n" + str(exc)
        refused = self._check_new_config(new)
        if refused:
            for line in refused:
                log.error("reload refused: %s", line)
            return False, "reload refused, the running config is unchanged:\n" + "\n".join(refused)
        summary = self.runtime.apply_config(new, time.time())
        self.config = new
        self.scheduler.update(self.runtime.book.probes)
        self.metrics.sync_series(self.runtime.book)
        self._settle()
        self._save_state()
        self._arm_expiry()
        self.reconciler.poke()
        message = f"reloaded {path}: {summary.describe()}"
        log.info("%s", message)
        return True, message

    def _settle(self) -> None:
        """``settle_heap`` now, and again once every probe has run (the daemon's ``_on_pass``)."""
        settle_heap()
        self._settle_at = self.scheduler.completed + len(self.runtime.book.probes)

    def _check_new_config(self, new: Config) -> list[str]:
        """What makes a valid config unusable by this running daemon."""
        refused = scriptsec.check_config_scripts(new)
        if new.control.socket != self.config.control.socket:
            refused.append("control.socket cannot change on reload (restart healthd)")
        if new.metrics != self.config.metrics:
            refused.append("metrics cannot change on reload (restart healthd)")
        return refused


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def settle_heap() -> None:
    """Keep the config and everything built from it out of the garbage collector's full passes.

    Called at start and after a reload, and again once every probe has run (the scheduler's
    slots, the last results, the metrics' records and the tables of a reconcile pass exist
    then).  They live as long as the config does; with thousands of real servers a full
    collection that walks them all stalls the event loop (and every probe due meanwhile) for
    tens of ms.  Frozen objects are still freed when nothing refers to them any more.

    What building them left behind (the YAML parse, the first pass's thousands of operations
    and log lines) is freed by then: its pages go back to the system (``memory.give_back``;
    1.5-2 MB at 10 000 real servers, which glibc would otherwise keep).
    """
    gc.collect()
    gc.freeze()
    memory.give_back()
