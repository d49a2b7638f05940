"""The lean HTTP probe: plain HTTP, status only (no ``expect_body``) -- the common check.

One non-blocking socket and the event loop's reader/writer callbacks, no streams, no transport,
no parser object: connect, send the request (built and validated once per check by h11, see
``http.request_bytes``), read until the end of the response head, judge the status line, close.
The body is never read; closing with unread data makes the kernel send an RST, which is what
load balancers' checkers usually do (no TIME_WAIT on either side).  Interim 1xx answers are
skipped.  HTTPS and ``expect_body`` checks take the full h11 path in ``http.py``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
import time

from healthd.checkspec import HttpCheck, ProbeResult, Reason, Target
from healthd.probes.lastlook import Look
from healthd.probes.matchers import status_matches, status_text
from healthd.probes.result import classify_os_error, complete

_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_SYN_SENT = 2
_CLOSE = 7
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r\n")
MAX_HEAD_BYTES = 65536


class _BadResponse(Exception):
    pass


class _ClosedEarly(Exception):
    pass


async def _ready(sock: socket.socket, write: bool) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    if write:
        loop.add_writer(fd, _set_done, future)
    else:
        loop.add_reader(fd, _set_done, future)
    try:
        await future
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _connect(sock: socket.socket, address: str, port: int, look: Look | None) -> None:
    code = sock.connect_ex((address, port))
    if code == errno.EINPROGRESS:
        state = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0]
        if state == _SYN_SENT:
            await _ready(sock, write=True)
            state = 0
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if state == _CLOSE and code == 0:
            code = errno.ECONNRESET
    if code:
        raise OSError(code, os.strerror(code))
    if look is not None:
        look.connect_seen()


def status_of_head(head: bytes) -> int:
    """The status code of a response head (``head`` ends with the status line's CRLF or more)."""
    match = _STATUS_LINE.match(head)
    if match is None:
        line = head.split(b"\r\n", 1)[0][:80]
        raise _BadResponse(f"bad response: invalid status line {line!r}")
    return int(match.group(1))


async def _read_status(sock: socket.socket) -> int:
    """Read up to the end of the final response head; its status code."""
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            status = status_of_head(buf[: end + 2])
            if 100 <= status < 200 and status != 101:
                buf = buf[end + 4 :]  # an interim answer: the real one follows
                continue
            return status
        if len(buf) > MAX_HEAD_BYTES:
            raise _BadResponse(f"bad response: head longer than {MAX_HEAD_BYTES} bytes")
        try:
            data = sock.recv(MAX_HEAD_BYTES)
        except BlockingIOError:
            await _ready(sock, write=False)
            continue
        if not data:
            if not buf:
                raise _ClosedEarly
            raise _BadResponse("bad response: connection closed in the response head")
        buf += data


async def probe_status(
    spec: HttpCheck,
    target: Target,
    port: int,
    request: bytes,
    start: float | None = None,
    look: Look | None = None,
) -> ProbeResult:
    """One plain-HTTP request; ok iff the status is expected (``look``: the deadline's last
    look at the socket, ``lastlook.py``)."""
    start = time.monotonic() if start is None else start
    status: int | None = None
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in target.address else socket.AF_INET, _STREAM)
    except OSError as exc:
        reason, what = classify_os_error(exc)
        return complete(spec, target, start, reason, what)
    if look is not None:
        look.watch(sock)
    try:
        await _connect(sock, target.address, port, look)
        sent = sock.send(request)  # a fresh socket's buffer takes a request of a few hundred bytes
        while sent < len(request):
            await _ready(sock, write=True)
            sent += sock.send(request[sent:])
        status = await _read_status(sock)
        if status_matches(status, spec.expect_status):
            reason, what = Reason.OK, status_text(status)
        else:
            reason, what = Reason.STATUS, status_text(status)
    except _ClosedEarly:
        reason, what = Reason.PROTOCOL, "connection closed without a response"
    except _BadResponse as exc:
        reason, what = Reason.PROTOCOL, str(exc)
    except OSError as exc:
        reason, what = classify_os_error(exc)
    finally:
        if look is not None:
            look.closing()
        sock.close()
    return complete(spec, target, start, reason, what, http_status=status)
