"""notify commands: run ``notify.up``/``notify.down`` of a real server, ``notify_pool`` of a
virtual server, when its health changes.

A command runs without a shell, as ``scripts.user`` (when healthd is root), in its own process
group, with a minimal environment plus ``HEALTHD_*`` variables that say what happened.  Its
timeout is enforced by killing the whole group.  Commands run in background tasks, so neither
probe handling nor the reconciler ever waits for one; at most ``max_concurrent`` run at once, the
others queue (at most ``max_pending``, beyond that they are dropped and logged).  Commands for
the same real server (or the same pool) run one after the other, in the order of the changes.
Each run is logged and written to the event log with its exit status and output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from healthd import procs
from healthd.config.types import NotifyConfig, RealServerConfig, VirtualServerConfig
from healthd.events import EventLog
from healthd.model import Health
from healthd.probes.matchers import exit_text, format_output, os_error_text

log = logging.getLogger("healthd.notify")

OUTPUT_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Notification:
    state: str  # "up" or "down"
    virtual_server: str
    real_server: str | None  # None: the pool (notify_pool)
    argv: tuple[str, ...]
    timeout_s: float
    env: dict[str, str]

    def describe(self) -> str:
        who = self.virtual_server
        who += f"/{self.real_server}" if self.real_server is not None else " pool"
        return f"notify {self.state} {who}: {self.argv[0]}"


def notify_env(
    state: str, vs: VirtualServerConfig, rs: RealServerConfig | None, reason: str
) -> dict[str, str]:
    """The whole environment of a notify command."""
    key = vs.key
    return {
        **procs.base_env(),
        "HEALTHD_EVENT": state,
        "HEALTHD_SCOPE": "real_server" if rs is not None else "pool",
        "HEALTHD_VIRTUAL_SERVER": vs.name,
        "HEALTHD_VIRTUAL_SERVER_ADDRESS": key.address,
        "HEALTHD_VIRTUAL_SERVER_PORT": str(key.port),
        "HEALTHD_VIRTUAL_SERVER_PROTOCOL": key.protocol.value if key.protocol else "",
        "HEALTHD_VIRTUAL_SERVER_FWMARK": str(key.fwmark),
        "HEALTHD_REAL_SERVER": rs.name if rs is not None else "",
        "HEALTHD_REAL_SERVER_ADDRESS": rs.address if rs is not None else "",
        "HEALTHD_REAL_SERVER_PORT": str(rs.port) if rs is not None else "",
        "HEALTHD_REASON": reason,
    }


def pool_health(members: Iterable[Health]) -> Health:
    """UP if any real server is up; DOWN if every one has a verdict and none is up.  Reads
    ``members`` only as far as it needs: up to the first one up."""
    seen = False
    all_down = True
    for health in members:
        if health is Health.UP:
            return Health.UP
        seen = True
        all_down = all_down and health is Health.DOWN
    return Health.DOWN if seen and all_down else Health.UNKNOWN


def _command(notify: NotifyConfig | None, health: Health) -> tuple[str, ...]:
    if notify is None:
        return ()
    return notify.up if health is Health.UP else notify.down if health is Health.DOWN else ()


class Notifier:
    def __init__(
        self,
        *,
        events: EventLog,
        user: Callable[[], str | None] = lambda: None,
        dry_run: bool = False,
        max_concurrent: int = 8,
        max_pending: int = 256,
    ) -> None:
        self._events = events
        self._user = user
        self._dry_run = dry_run
        self._max_pending = max_pending
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[tuple[str, str | None], asyncio.Task[None]] = {}  # per server: order
        self._pools: dict[str, Health] = {}  # the pool state last notified, per virtual server

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def real_server(
        self, vs: VirtualServerConfig, rs: RealServerConfig, health: Health, reason: str
    ) -> None:
        """``rs`` became ``health``: run its ``notify`` command for it, if any."""
        argv = _command(rs.notify, health)
        if argv and rs.notify is not None:
            env = notify_env(health.value, vs, rs, reason)
            self.submit(
                Notification(health.value, vs.name, rs.name, argv, rs.notify.timeout_s, env)
            )

    def pool(
        self, vs: VirtualServerConfig, members: Iterable[Health], reason: Callable[[], str]
    ) -> None:
        """Recompute the pool's state; on a change to up or down run ``notify_pool``.  A real
        server's change costs as many members as it takes to find one up (one, mostly: a
        burst of changes in a large pool stays cheap); ``reason`` is made only for a command."""
        health = pool_health(members)
        if health is Health.UNKNOWN or self._pools.get(vs.name) is health:
            return
        self._pools[vs.name] = health
        argv = _command(vs.notify_pool, health)
        if argv and vs.notify_pool is not None:
            env = notify_env(health.value, vs, None, reason())
            self.submit(
                Notification(health.value, vs.name, None, argv, vs.notify_pool.timeout_s, env)
            )

    def submit(self, note: Notification) -> None:
        """Run ``note`` in the background (after the previous one for the same server)."""
        if len(self._tasks) >= self._max_pending:
            log.error(
                "%s: dropped, %d notify commands already pending", note.describe(), self.pending
            )
            self._emit(note, None, "dropped: too many notify commands pending")
            return
        key = (note.virtual_server, note.real_server)
        task = asyncio.create_task(self._run(note, self._last.get(key)), name=note.describe())
        self._last[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: self._last.pop(key) if self._last.get(key) is t else None)

    async def _run(self, note: Notification, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        if self._dry_run:
            log.info("dry-run: would run %s", note.describe())
            self._emit(note, None, "dry-run: not run", dry_run=True)
            return
        async with self._slots:
            try:
                async with asyncio.timeout(note.timeout_s):
                    done = await procs.run(
                        note.argv, env=note.env, limit=OUTPUT_LIMIT, user=self._user()
                    )
            except TimeoutError:
                text = f"timed out after {note.timeout_s:g}s: its process group was killed"
                log.warning("%s %s", note.describe(), text)
                self._emit(note, None, text)
                return
            except procs.UnknownUser as exc:
                log.error("%s: %s", note.describe(), exc)
                self._emit(note, None, str(exc))
                return
            except OSError as exc:
                log.error("%s: cannot run: %s", note.describe(), os_error_text(exc))
                self._emit(note, None, f"cannot run: {os_error_text(exc)}")
                return
            except Exception as exc:  # a bug: log it, never lose the task's exception
                log.exception("%s failed", note.describe())
                self._emit(note, None, f"internal error: {exc!r}")
                return
        output = format_output(done.output, done.truncated)
        level = logging.INFO if done.returncode == 0 else logging.WARNING
        log.log(level, "%s %s", note.describe(), exit_text(done.returncode, output))
        self._emit(note, done.returncode, output)

    def _emit(self, note: Notification, code: int | None, output: str, **extra: bool) -> None:
        self._events.notify(
            command=list(note.argv),
            exit=code,
            output=output,
            state=note.state,
            virtual_server=note.virtual_server,
            real_server=note.real_server,
            **extra,
        )

    async def close(self, grace_s: float = 2.0) -> None:
        """Let running commands finish for up to ``grace_s``, then kill what is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
