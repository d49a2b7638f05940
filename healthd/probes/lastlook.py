"""A Python probe's deadline with a last look at its socket (HTTP and HTTPS over asyncio).

Under load the event loop comes round to a socket late: an answer the kernel had before the
deadline may not have been read when the deadline's timer fires, and a plain cancellation would
call a prompt server timed out.  The C engine looks at a late check's socket once more
(``_tcpengine_check.c``, ``te_last_look``); this does the same for the checks that run in Python:

* the probe shows its socket (``Look.watch``) and says when it saw its connect complete
  (``Look.connect_seen``).  A connect the kernel established earlier than the probe saw it moves
  the deadline on by that lateness: the request could only go once the probe saw it (the C
  engine's ``te_connected_late``);
* when the deadline comes, the decision waits for what the loop has already queued (a reader
  that took the answer from the kernel has woken the probe; it runs first);
* then, if the kernel holds for the socket something the probe has not taken yet and it came by
  the deadline (the connect, or unread bytes: ``TCP_INFO``'s ``last_ack_recv`` and
  ``last_data_recv``, ``SIOCINQ``), the probe gets another turn of the loop, and again while that
  stays true, for at most its timeout again; else it is cancelled and timed out.  Bytes that came
  after the deadline never count, so a server that answers late still times out.

A probe that ends past its deadline (in such a turn, or in the one the decision waited for)
counts only if the last bytes on its socket came by the deadline (``Look.closing`` reads when, as
the probe closes), and reports the duration up to them: the server's time, not the loop's (the
time a connect sat unseen is taken off too).  Those last bytes may be ones the probe did not need
(a body after the head): a timeout then, as without the look.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import socket
import struct
import termios
import time
from collections.abc import Awaitable, Callable

from healthd.checkspec import ProbeResult
from healthd.probes.tcp import last_received

_INQ = struct.Struct("i")
GRACE_S = 0.005  # between two looks once the loop was found behind (it usually is more)


class Look:
    """What a probe shows its deadline: the socket it waits on, and whether it saw it connect."""

    __slots__ = ("connected", "deadline", "ended", "last_in", "sock", "timeout_s", "waited")

    def __init__(self, deadline: float, timeout_s: float) -> None:
        self.deadline = deadline  # time.monotonic()
        self.timeout_s = timeout_s  # looks find it owed turns for at most this past the deadline
        self.sock: socket.socket | None = None
        self.connected = False
        self.last_in: float | None = None  # when data last came in, as the probe closed
        self.ended: float | None = None  # when the probe had its result and began to close
        self.waited = 0.0  # seconds the deadline moved on for connects seen late

    def watch(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connected = False

    def connect_seen(self) -> None:
        """The probe saw its connect complete.  If the kernel had established it earlier (the
        SYN-ACK's arrival), the deadline moves on by the time the probe was kept waiting."""
        self.connected = True
        if time.monotonic() < self.deadline - self.timeout_s / 2:
            return  # seen within half its timeout: not worth a system call (as the C engine)
        got = last_received(self.sock)
        if got is None:
            return
        late = got[1] / 1000.0  # since the SYN-ACK came in
        if late > 0:
            self.deadline += late
            self.waited += late

    def closing(self) -> None:
        """The probe has its result and is about to close its socket (the close has its own
        bound: the deadline no longer applies): when data last came in on it."""
        self.ended = now = time.monotonic()
        if now <= self.deadline:
            return  # in time: when data came in does not matter
        got = last_received(self.sock)
        if got is not None:
            self.last_in = now - got[0] / 1000.0

    def owed(self, now: float) -> float | None:
        """When the kernel received something for the socket that the probe has not taken yet,
        if that was by the deadline; else None."""
        got = last_received(self.sock)
        if got is None:
            return None
        data_ms, ack_ms = got
        if not self.connected:
            at = now - ack_ms / 1000.0  # the connect is established: its SYN-ACK came then
        else:
            assert self.sock is not None
            try:
                unread = _INQ.unpack(fcntl.ioctl(self.sock, termios.FIONREAD, b"\0" * 4))[0]
            except OSError:
                return None
            if unread <= 0:
                return None
            at = now - data_ms / 1000.0
        return at if at <= self.deadline else None


class _Deadline:
    """The timer of one probe: looks when the deadline comes, expires ``timeout`` when none is
    owed."""

    def __init__(self, look: Look, timeout: asyncio.Timeout) -> None:
        self._loop = asyncio.get_running_loop()
        self._look = look
        self._timeout = timeout
        self._handle: asyncio.Handle | None = None
        self._arm(look.deadline)

    def _arm(self, at: float) -> None:
        self._handle = self._loop.call_later(max(0.0, at - time.monotonic()), self._fire)

    def _fire(self) -> None:
        # after what the loop has queued already: a probe an answer woke goes first
        self._handle = self._loop.call_soon(self._decide)

    def _decide(self) -> None:
        look, now = self._look, time.monotonic()
        if look.ended is not None:
            self._handle = None
            return  # closing
        if now < look.deadline:  # a late connect moved it on
            self._arm(look.deadline)
            return
        if now < look.deadline + look.timeout_s and look.owed(now) is not None:
            self._arm(now + GRACE_S)
            return
        self._handle = None
        self._timeout.reschedule(self._loop.time())  # expires now: the probe is cancelled

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def within(
    timeout_s: float,
    probe: Callable[[Look], Awaitable[ProbeResult]],
    timed_out: Callable[[], ProbeResult],
) -> ProbeResult:
    """``probe(look)`` with a deadline ``timeout_s`` from now and the last look; ``timed_out()``
    when it expires."""
    start = time.monotonic()
    look = Look(start + timeout_s, timeout_s)
    try:
        async with asyncio.timeout(None) as timeout:
            deadline = _Deadline(look, timeout)
            try:
                result = await probe(look)
            finally:
                deadline.cancel()
    except TimeoutError:
        return timed_out()
    if (time.monotonic() if look.ended is None else look.ended) <= look.deadline:
        if look.waited:  # a connect seen late: not the server's time
            duration_s = max(0.0, result.duration_s - look.waited)
            return dataclasses.replace(result, duration_s=duration_s)
        return result
    # It ended past its deadline, in a turn a look gave it (or before the loop came round to
    # deciding): it counts only as far as what came in by the deadline.
    if look.last_in is None:
        return result if not result.ok else timed_out()  # a failure says more than a timeout
    if look.last_in > look.deadline:
        return timed_out()  # what it read last came after the deadline
    return dataclasses.replace(result, duration_s=max(0.0, look.last_in - start - look.waited))
