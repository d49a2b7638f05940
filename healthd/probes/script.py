"""Script probe: run an argv (no shell) in its own session; exit 0 means healthy.

``loop.subprocess_exec`` with a small protocol is used rather than ``create_subprocess_exec``:
on Python 3.11 ``Process.wait()`` only returns once every pipe is closed, so a background child
holding stdout would hide the leader's exit.  The protocol tells the leader's exit apart, keeps
the first ``max_output_bytes`` of output and discards the rest (the child never blocks on a full
pipe), and there is no extra task to clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from asyncio.subprocess import DEVNULL, PIPE, STDOUT

from healthd.checkspec import ProbeResult, Reason, ScriptCheck, Target
from healthd.probes.matchers import exit_text, format_output, os_error_text
from healthd.probes.result import complete

_TERM_GRACE_S = 0.5  # on cancellation: from SIGTERM to SIGKILL
_DRAIN_GRACE_S = 0.5  # after the group is killed: for the output pipe to reach EOF
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def script_env(target: Target) -> dict[str, str]:
    """The whole environment of a check script: a minimal base plus the target."""
    return {
        "PATH": _PATH,
        "LANG": "C.UTF-8",
        "HEALTHD_REAL_SERVER_ADDRESS": target.address,
        "HEALTHD_REAL_SERVER_PORT": str(target.port),
        "HEALTHD_VIRTUAL_SERVER_ADDRESS": target.vs_address,
        "HEALTHD_VIRTUAL_SERVER_PORT": str(target.vs_port),
        "HEALTHD_VIRTUAL_SERVER_PROTOCOL": target.vs_protocol,
        "HEALTHD_VIRTUAL_SERVER_FWMARK": str(target.vs_fwmark),
    }


class _ScriptProtocol(asyncio.SubprocessProtocol):
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


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _stop(pgid: int, protocol: _ScriptProtocol) -> None:
    """SIGTERM the group, SIGKILL it after a grace period, and always see the leader reaped."""
    _signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):  # the caller re-raises
        async with asyncio.timeout(_TERM_GRACE_S):
            await protocol.exited.wait()
    _signal_group(pgid, signal.SIGKILL)
    while not protocol.exited.is_set():  # set once the child watcher has reaped the leader
        with contextlib.suppress(asyncio.CancelledError):
            await protocol.exited.wait()


async def probe_script(spec: ScriptCheck, target: Target) -> ProbeResult:
    """Run ``spec.command`` once; ok iff it exits 0. Leaves no process behind, ever."""
    start = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ScriptProtocol(spec.max_output_bytes),
            *spec.command,
            stdin=DEVNULL,
            stdout=PIPE,
            stderr=STDOUT,
            env=script_env(target),
            start_new_session=True,
        )
    except OSError as exc:
        return complete(spec, target, start, Reason.ERROR, f"cannot run: {os_error_text(exc)}")
    pgid = transport.get_pid()  # start_new_session: the leader's pid is the group's id
    try:
        await protocol.exited.wait()
        _signal_group(pgid, signal.SIGKILL)  # no orphan outlives the leader
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_GRACE_S):
                await protocol.finished.wait()  # EOF: every holder of the pipe is gone
    except BaseException:
        await _stop(pgid, protocol)
        raise
    finally:
        transport.close()  # our pipe ends, even if a process that left the group holds theirs
    returncode = transport.get_returncode()
    assert returncode is not None
    reason = Reason.OK if returncode == 0 else Reason.SIGNAL if returncode < 0 else Reason.EXIT
    output = format_output(protocol.output, protocol.truncated or not protocol.finished.is_set())
    return complete(spec, target, start, reason, exit_text(returncode, output))
