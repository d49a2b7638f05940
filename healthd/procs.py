"""Run a command (no shell) in its own session, optionally as another user; leave nothing behind.

Shared by script checks and notify commands.  ``loop.subprocess_exec`` with a small protocol is
used rather than ``create_subprocess_exec``: on Python 3.11 ``Process.wait()`` only returns once
every pipe is closed, so a background child holding stdout would hide the leader's exit.  The
protocol tells the leader's exit apart, keeps the first ``limit`` bytes of output and discards
the rest (the child never blocks on a full pipe), and there is no extra task to clean up.

The caller bounds the run by cancellation (``asyncio.timeout``): the whole process group then
gets SIGTERM, SIGKILL after a grace period, and the leader is always reaped before ``run``
re-raises.  When the leader exits, the rest of its group is SIGKILLed: no orphan outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TERM_GRACE_S = 0.5  # on cancellation: from SIGTERM to SIGKILL
DRAIN_GRACE_S = 0.5  # after the group is killed: for the output pipe to reach EOF
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UnknownUser(Exception):
    """The configured user to run commands as does not exist."""

    def __init__(self, user: str) -> None:
        super().__init__(f"cannot run as user {user!r}: no such user")
        self.user = user


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int  # negative: killed by that signal
    output: bytes  # stdout and stderr together, at most ``limit`` bytes
    truncated: bool  # more output than ``limit``, or the pipe was still held open by an escapee


def base_env() -> dict[str, str]:
    """The minimal environment every command starts from."""
    return {"PATH": PATH, "LANG": "C.UTF-8"}


def credentials(user: str | None) -> dict[str, Any]:
    """Popen keyword arguments that run the child as ``user`` (only when we are root).

    ``extra_groups=[]`` drops root's supplementary groups.  Raises ``UnknownUser``.
    """
    if user is None or os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UnknownUser(user) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class _Protocol(asyncio.SubprocessProtocol):
    """Capped output, plus events for "leader exited and reaped" and "pipes closed too"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.output = bytearray()
        self.truncated = False
        self.exited = asyncio.Event()
        self.finished = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        room = self.limit - len(self.output)
        if len(data) > room:
            self.truncated = True
        if room > 0:
            self.output += data[:room] if isinstance(data, bytes) else data[:room].encode()

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.finished.set()


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _stop(pgid: int, protocol: _Protocol) -> None:
    """SIGTERM the group, SIGKILL it after a grace period, and always see the leader reaped."""
    signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):  # the caller re-raises
        async with asyncio.timeout(TERM_GRACE_S):
            await protocol.exited.wait()
    signal_group(pgid, signal.SIGKILL)
    while not protocol.exited.is_set():  # set once the child watcher has reaped the leader
        with contextlib.suppress(asyncio.CancelledError):
            await protocol.exited.wait()


async def run(
    argv: Sequence[str], *, env: Mapping[str, str], limit: int, user: str | None = None
) -> Completed:
    """Run ``argv`` to completion (or cancellation).  Raises ``OSError`` or ``UnknownUser``."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _Protocol(limit),
        *argv,
        stdin=DEVNULL,
        stdout=PIPE,
        stderr=STDOUT,
        env=dict(env),
        cwd="/",
        start_new_session=True,
        **credentials(user),
    )
    pgid = transport.get_pid()  # start_new_session: the leader's pid is the group's id
    try:
        await protocol.exited.wait()
        signal_group(pgid, signal.SIGKILL)  # no orphan outlives the leader
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_GRACE_S):
                await protocol.finished.wait()  # EOF: every holder of the pipe is gone
    except BaseException:
        await _stop(pgid, protocol)
        raise
    finally:
        transport.close()  # our pipe ends, even if a process that left the group holds theirs
    returncode = transport.get_returncode()
    assert returncode is not None
    truncated = protocol.truncated or not protocol.finished.is_set()
    return Completed(returncode, bytes(protocol.output), truncated)
