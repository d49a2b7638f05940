"""Many TCP connects in progress waited for at once: one epoll set, one loop reader, few timers.

The scheduler's hot path (``scheduler._start``) hands every connect that ``tcp_start`` could not
decide on the spot to ``ConnectWaiter.wait``.  Rather than the loop's own writer callback per
socket (a handle, a selector key and two ``epoll_ctl`` calls per connect, and a timer handle in
the loop's heap for its timeout), the waiter keeps its own epoll set, registered once as a
reader of the loop:

* a socket is added and removed with one ``epoll_ctl`` each (no handle, no selector key);
* one readiness callback reads every socket that is ready in one ``epoll_wait`` and finishes
  each; a connect that succeeded (writable, no error, no hang-up) needs no ``SO_ERROR`` read;
* timeouts: connects with the same timeout expire in the order they started, so each timeout
  has a FIFO queue and one loop timer serves its head (a finished connect is skipped when its
  turn comes; the timer fires about once per timeout, not once per connect).  A connect past its
  deadline is looked at once more (``tcp.connected_by``): if the kernel had established it by
  then (the loop busy elsewhere, more sockets ready than one ``epoll_wait`` takes), it succeeds.

A finished connect may leave its file descriptor number to a new socket registered in the same
batch of events; each registration carries the batch it was made in, and events of an earlier
``epoll_wait`` are never given to a later registration.
"""

from __future__ import annotations

import asyncio
import select
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from healthd.checkspec import ProbeResult, Reason
from healthd.probes import timeout_result
from healthd.probes.result import complete
from healthd.probes.tcp import PendingConnect, close_socket, connected_by, tcp_result

T = TypeVar("T")
DoneFn = Callable[[T, ProbeResult | None], None]  # (token, result; None when cancelled)

_FAILED = select.EPOLLERR | select.EPOLLHUP
MAX_EVENTS = 1024  # per epoll_wait; more ready sockets are read on the loop's next turn
# A loop's timer may fire this much early (uvloop's clock counts milliseconds): a connect due
# that close to its deadline times out with it rather than arming the timer again at once.
EXPIRE_SLACK_S = 0.001


class Waiting(Generic[T]):
    """One connect being waited for; ``cancel`` abandons it (its socket is closed)."""

    __slots__ = ("batch", "deadline", "pending", "token", "waiter")

    def __init__(
        self,
        waiter: ConnectWaiter[T],
        token: T,
        pending: PendingConnect,
        deadline: float,
    ) -> None:
        self.waiter: ConnectWaiter[T] | None = waiter  # None once finished
        self.token = token
        self.pending = pending
        self.deadline = deadline
        self.batch = waiter._batch

    def cancel(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            waiter._finish(self, None)


class ConnectWaiter(Generic[T]):
    """Waits on the running loop for connects in progress; ``done(token, result)`` for each."""

    def __init__(self, loop: asyncio.AbstractEventLoop, done: DoneFn[T]) -> None:
        self._loop = loop
        self._done = done
        self._epoll = select.epoll()
        self._fd = self._epoll.fileno()
        self._by_fd: dict[int, Waiting[T]] = {}
        self._queues: dict[float, deque[Waiting[T]]] = {}  # per timeout, in deadline order
        self._timers: dict[float, asyncio.TimerHandle] = {}  # per timeout, at its queue's head
        self._batch = 0
        loop.add_reader(self._fd, self._ready)

    def __len__(self) -> int:
        return len(self._by_fd)

    def wait(self, token: T, pending: PendingConnect, timeout_s: float) -> Waiting[T]:
        """Wait for ``pending`` (its socket is now the waiter's) for at most ``timeout_s``."""
        sock = pending.sock
        fd = sock.fileno()
        self._epoll.register(fd, select.EPOLLOUT)  # may raise: the caller closes the socket
        waiting = Waiting(self, token, pending, self._loop.time() + timeout_s)
        self._by_fd[fd] = waiting
        queue = self._queues.get(timeout_s)
        if queue is None:
            queue = self._queues[timeout_s] = deque()
        queue.append(waiting)
        if timeout_s not in self._timers:
            self._timers[timeout_s] = self._loop.call_at(waiting.deadline, self._expire, timeout_s)
        return waiting

    def close(self) -> None:
        """Cancel every connect still waited for and let go of the epoll set."""
        for waiting in list(self._by_fd.values()):
            waiting.cancel()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._queues.clear()
        self._loop.remove_reader(self._fd)
        self._epoll.close()

    # ---- the loop's callbacks ---------------------------------------------------------------

    def _ready(self) -> None:
        batch = self._batch
        self._batch = batch + 1  # registrations from here on are not this batch's
        by_fd = self._by_fd
        for fd, events in self._epoll.poll(0, MAX_EVENTS):
            waiting = by_fd.get(fd)
            if waiting is None or waiting.batch > batch:
                continue  # closed since, and its number taken by a socket registered after
            pending = waiting.pending
            if events & _FAILED:  # the socket's error says which
                result = tcp_result(pending)
            else:
                result = complete(
                    pending.spec, pending.target, pending.start, Reason.OK, "connected"
                )
            self._finish(waiting, result)

    def _expire(self, timeout_s: float) -> None:
        del self._timers[timeout_s]
        queue = self._queues[timeout_s]
        now = self._loop.time() + EXPIRE_SLACK_S
        while queue:
            waiting = queue[0]
            if waiting.waiter is not None and waiting.deadline > now:
                break
            queue.popleft()
            if waiting.waiter is not None:
                # what the kernel did by the deadline counts, though the loop came round late
                pending = waiting.pending
                result = connected_by(pending, waiting.deadline)
                if result is None:
                    result = timeout_result(pending.spec, pending.target, timeout_s)
                self._finish(waiting, result)
        # A connect started by a callback above may have armed a timer for its own deadline:
        # the head's comes first.
        timer = self._timers.pop(timeout_s, None)
        if timer is not None:
            timer.cancel()
        if queue:
            self._timers[timeout_s] = self._loop.call_at(queue[0].deadline, self._expire, timeout_s)
        else:
            del self._queues[timeout_s]

    def _finish(self, waiting: Waiting[T], result: ProbeResult | None) -> None:
        waiting.waiter = None
        sock = waiting.pending.sock
        fd = sock.fileno()
        del self._by_fd[fd]
        # Closing would take the socket out of the set only if no other process holds it: a
        # child between fork and exec (a check script starting) does for a moment, and its entry
        # would then answer for the next socket with this number.
        self._epoll.unregister(fd)
        # cancelled (None): it may have come up meanwhile; a timeout: still in SYN_SENT
        close_socket(sock, waiting.pending.spec, result is None or result.ok)
        self._done(waiting.token, result)
