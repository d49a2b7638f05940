"""systemd integration: ``sd_notify`` messages and a watchdog fed only while probes progress.

The notify protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).  It is forty lines, so healthd
carries it instead of a library dependency.  Without ``$NOTIFY_SOCKET`` (not started by systemd,
or ``Type=simple``) every call is a silent no-op; a failed send is logged at debug level only.

Watchdog: with ``WatchdogSec=`` systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, our pid)
and restarts the service if ``WATCHDOG=1`` stops arriving.  ``watchdog()`` sends it every half
period, but only while the scheduler is making progress: when the last completed probe is older
than ``stall_after_s``, it stops feeding (and says so once), so a daemon whose probes hang but
whose event loop still runs is restarted too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable

from healthd.config.types import Config

log = logging.getLogger("healthd.systemd")

STALL_MARGIN_S = 5.0


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return None
    return "\0" + path[1:] if path[0] == "@" else path


def notify(message: str) -> bool:
    """Send ``message`` to systemd; True if it was sent."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", message, exc)
        return False
    return True


def ready() -> bool:
    """Startup (or a reload) is complete."""
    return notify("READY=1")


def reloading() -> bool:
    """A reload begins; call ``ready()`` when it is done.  systemd >= 253 wants the timestamp."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line status shown by ``systemctl status``."""
    return notify("STATUS=" + " ".join(text.split()))


def watchdog_interval_s() -> float | None:
    """Half of ``WatchdogSec``, when systemd wants watchdog pings from this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6 / 2


def stall_after_s(config: Config) -> float:
    """How old the last completed probe may get before the scheduler counts as stalled.

    2 x the largest check interval + the largest timeout + 5 s: every probe runs at least once
    per interval (jitter and a slow probe included), so a healthy scheduler always completes one
    well within it.  No checks at all (static real servers only): never stalled.
    """
    timings = [
        check.timing
        for vs in config.virtual_servers
        for rs in vs.real_servers
        for check in rs.checks
    ]
    if not timings:
        return math.inf
    interval = max(t.interval_s for t in timings)
    timeout = max(t.timeout_s for t in timings)
    return 2 * interval + timeout + STALL_MARGIN_S


async def watchdog(
    progress: Callable[[], float],
    stall_after_s: float | Callable[[], float],
    *,
    interval_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval_s`` (default: half of ``WatchdogSec``) while
    ``clock() - progress()`` is at most ``stall_after_s``.  Returns at once without a watchdog.

    ``progress()`` is the ``clock()`` time of the last completed probe
    (``Scheduler.last_progress``).  ``stall_after_s`` may be a function (it follows reloads).
    """
    interval = watchdog_interval_s() if interval_s is None else interval_s
    if interval is None:
        return
    stalled = False
    while True:
        limit = stall_after_s() if callable(stall_after_s) else stall_after_s
        age = clock() - progress()
        if age <= limit:
            if stalled:
                log.warning("scheduler progressing again: feeding the systemd watchdog")
                stalled = False
            notify("WATCHDOG=1")
        elif not stalled:
            log.error(
                "scheduler stalled for %.0fs: not feeding the systemd watchdog"
                " (systemd restarts healthd when WatchdogSec runs out)",
                age,
            )
            stalled = True
        await sleep(interval)
