"""TCP connect probe: connect, then close (the hot path: no transports, no protocols, no futures
unless the connection is still being set up).

A connection that came up is closed as the check's ``close`` says: ``graceful`` (the default)
with a FIN, so the real server sees an orderly close; ``reset`` aborts it with an RST
(``SO_LINGER`` 0), as keepalived's TCP_CHECK does: the director keeps no socket in TIME_WAIT for
a minute after every check.  The reset costs the checker more CPU, not less: the kernel tears the
real server's side down in the context of the process that sent the RST (docs/benchmarks.md).

``tcp_start`` is synchronous: it opens a non-blocking socket and starts the connect.  When the
handshake is already over (a local or very near backend, or an immediate RST), it returns the
result at once; this costs a handful of syscalls and no event-loop round trip.  Otherwise it
returns a ``PendingConnect``: the scheduler waits for its socket to become writable with loop
callbacks and reads the outcome with ``tcp_result``; ``tcp_wait`` is the same as a coroutine.
``probe_tcp`` is both, for callers that just want a result.  The socket is always closed,
also when ``tcp_wait`` is cancelled (the caller's timeout) or never awaited (``close()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import socket
import struct
import time

from healthd.checkspec import ProbeResult, Reason, Target, TcpCheck
from healthd.probes.result import classify_os_error, complete

_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_STREAM = socket.SOCK_STREAM | _NONBLOCK | getattr(socket, "SOCK_CLOEXEC", 0)
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
# TCP states from the first byte of TCP_INFO (linux/tcp_states.h).
_SYN_SENT = 2
_CLOSE = 7
_ABORT = struct.pack("ii", 1, 0)  # struct linger: on, 0 s: close() sends an RST


def close_socket(sock: socket.socket, spec: TcpCheck, connected: bool) -> None:
    """Close a check's socket; ``connected``: its handshake completed (``spec.close`` applies)."""
    if connected and spec.close == "reset":
        with contextlib.suppress(OSError):  # it takes no options: close it plainly
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
    sock.close()


class PendingConnect:
    """A connect in progress; ``tcp_wait`` finishes it, ``close`` abandons it."""

    __slots__ = ("sock", "spec", "start", "target")

    def __init__(self, spec: TcpCheck, target: Target, sock: socket.socket, start: float) -> None:
        self.spec = spec
        self.target = target
        self.sock = sock
        self.start = start

    def close(self) -> None:
        close_socket(self.sock, self.spec, True)  # it may have come up meanwhile


def _failed(spec: TcpCheck, target: Target, start: float, exc: OSError) -> ProbeResult:
    reason, what = classify_os_error(exc)
    return complete(spec, target, start, reason, what)


def _errno_result(spec: TcpCheck, target: Target, start: float, code: int) -> ProbeResult:
    return _failed(spec, target, start, _os_error(code))


def _os_error(code: int) -> OSError:
    # OSError(code, text) maps to the specific subclass (ConnectionRefusedError for ECONNREFUSED)
    return OSError(code, os.strerror(code))


def tcp_start(spec: TcpCheck, target: Target) -> ProbeResult | PendingConnect:
    """Start one TCP connect; the result when it is already decided, else a ``PendingConnect``."""
    start = time.monotonic()
    port = target.port if spec.port is None else spec.port
    address = target.address
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, _STREAM)
    except OSError as exc:
        return _failed(spec, target, start, exc)
    if not _NONBLOCK:  # pragma: no cover - not Linux
        sock.setblocking(False)
    pending = False
    code = -1
    try:
        code = sock.connect_ex((address, port))
        if code == errno.EINPROGRESS:
            state = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0]
            if state == _SYN_SENT:
                pending = True  # handed over: tcp_wait (or PendingConnect.close) closes it
                return PendingConnect(spec, target, sock, start)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if state == _CLOSE and code == 0:
                code = errno.ECONNRESET
    except OSError as exc:
        return _failed(spec, target, start, exc)
    finally:
        if not pending:
            close_socket(sock, spec, code == 0)
    if code == 0:
        return complete(spec, target, start, Reason.OK, "connected")
    return _errno_result(spec, target, start, code)


async def tcp_wait(pending: PendingConnect) -> ProbeResult:
    """Wait until the connect of ``pending`` succeeds or fails; always closes its socket."""
    sock, spec, target, start = pending.sock, pending.spec, pending.target, pending.start
    connected = True  # until known otherwise (cancelled: it may have come up meanwhile)
    try:
        loop = asyncio.get_running_loop()
        writable = loop.create_future()
        fd = sock.fileno()
        loop.add_writer(fd, _set_done, writable)
        try:
            await writable
        finally:
            loop.remove_writer(fd)
        result = tcp_result(pending)
        connected = result.ok
        return result
    except OSError as exc:
        connected = False
        return _failed(spec, target, start, exc)
    finally:
        close_socket(sock, spec, connected)


# struct tcp_info (linux/tcp.h): 8 one-byte fields, then u32s; tcpi_last_data_recv and
# tcpi_last_ack_recv (ms since data, and an ACK such as the SYN-ACK, last came in) are the 12th
# and 13th of those
_LAST_RECV = struct.Struct("=II")
_LAST_RECV_AT = 8 + 11 * 4
_TCP_INFO_LEN = 104
_ESTABLISHED, _CLOSE_WAIT = 1, 8


def last_received(sock: socket.socket | None) -> tuple[int, int] | None:
    """(ms since data last came in, ms since an ACK last came in) of an established socket (or
    one the server closed after answering); None for any other, or a closed one."""
    if sock is None or sock.fileno() < 0:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(info) < _LAST_RECV_AT + _LAST_RECV.size or info[0] not in (_ESTABLISHED, _CLOSE_WAIT):
        return None
    data_ms, ack_ms = _LAST_RECV.unpack_from(info, _LAST_RECV_AT)
    return data_ms, ack_ms


def connected_by(pending: PendingConnect, deadline: float) -> ProbeResult | None:
    """A connect whose deadline passed, looked at once more before it is timed out: if the
    kernel established it by ``deadline`` (the loop came round to it late), its success, with
    the time it took; else None."""
    got = last_received(pending.sock)
    if got is None:
        return None
    at = time.monotonic() - got[1] / 1000.0
    if at > deadline:
        return None
    result = complete(pending.spec, pending.target, pending.start, Reason.OK, "connected")
    return dataclasses.replace(result, duration_s=max(0.0, at - pending.start))


def tcp_result(pending: PendingConnect) -> ProbeResult:
    """The result of a connect in progress once its socket is writable (the caller closes it)."""
    spec, target, start = pending.spec, pending.target, pending.start
    try:
        code = pending.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError as exc:
        return _failed(spec, target, start, exc)
    if code == 0:
        return complete(spec, target, start, Reason.OK, "connected")
    return _errno_result(spec, target, start, code)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def probe_tcp(spec: TcpCheck, target: Target) -> ProbeResult:
    """One TCP connect to the target (``spec.port`` overrides the real server's port)."""
    started = tcp_start(spec, target)
    if isinstance(started, ProbeResult):
        return started
    return await tcp_wait(started)
