"""Plain TCP checks and plain HTTP checks run by the C engine (``healthd/_tcpengine.c``), wired
to an event loop.

The engine schedules, starts and waits for every plain TCP connect check itself (its own timer
heap, epoll set and timerfd; one ``run()`` per readiness of its descriptor) and hands back what
finished as ``(handle, code, duration_s, delay_s, extra)``.  ``NativeTcp`` turns those into the
``ProbeResult`` the rest of healthd knows, with the same reasons and wording as the Python probe
(``probes.tcp``), and calls ``done(token, result, delay_s)`` for each.  The Python work left per
check is that call: one tuple, one ``ProbeResult`` (the wording of a success is made once per
target), the callback.

Quiet checks (``quiet(handle)``): once the caller has seen a success that changes nothing, the
engine counts the next successes of that check (how many, their durations by bucket, when the
last one ended, its schedule delays by bucket) instead of reporting each, until a failure, which
it reports; ``drain()`` hands the counts over.  The Python work per settled success is then
nothing.

HTTP checks the engine runs are those of the lean path (``lean_http``: plain HTTP, the status
decides): the request's bytes come from ``probes.http.request_bytes``, and the results read as
``probes.http_lean`` says them, word for word (tests/probes/test_http_lean.py runs every case
through both).  HTTPS and ``expect_body`` checks stay in Python.

``available()`` says whether the extension was built; without it the scheduler runs the same
checks in Python (``probes.tcp``, ``probes.connects`` and ``probes.http_lean``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

import h11

from healthd.checkspec import HttpCheck, ProbeResult, Reason, Target, TcpCheck
from healthd.probes import timeout_result
from healthd.probes.http import lean_http, request_bytes
from healthd.probes.matchers import detail, status_text
from healthd.probes.result import classify_os_error

try:
    from healthd import _tcpengine
except ImportError:  # not built (no C compiler at install): the Python probe does the work
    _tcpengine = None  # type: ignore[assignment]

T = TypeVar("T")
DoneFn = Callable[[T, ProbeResult, float], None]  # (token, result, schedule delay in s)

# One readiness callback hands on at most as many results as take about this long to handle
# (the callback's cost per result, measured on the previous call), so that a slow result
# handler (an emulated CPU) does not hold up the rest of the loop: as scheduler.MAX_WAKE_S.
CALLBACK_S = 0.005
BUDGET = (8, 1024)  # results per callback, at least and at most

_FAILURES: dict[int, tuple[Reason, str]] = {}  # errno -> reason and wording, as probes.tcp says


def available() -> bool:
    return _tcpengine is not None


def _failure(code: int) -> tuple[Reason, str]:
    known = _FAILURES.get(code)
    if known is None:
        known = _FAILURES[code] = classify_os_error(OSError(code, os.strerror(code)))
    return known


class QuietCount(NamedTuple):
    """A quiet check's successes since the last drain."""

    n: int
    total_s: float  # their durations, summed
    counts: tuple[int, ...]  # by duration bucket (the engine's duration_bounds)
    last_end_wall: float  # when the latest ended (Unix time)
    last_duration_s: float


DelayCount = tuple[tuple[int, ...], int, float]  # by delay bucket, how many, their sum


class _Entry(Generic[T]):
    __slots__ = ("connected", "spec", "target", "timeout_s", "token")

    def __init__(
        self, token: T, spec: TcpCheck | HttpCheck, target: Target, timeout_s: float
    ) -> None:
        self.token = token
        self.spec = spec
        self.target = target
        self.timeout_s = timeout_s
        # a TCP check's success, worded once (an HTTP check's wording depends on the status)
        tcp = isinstance(spec, TcpCheck)
        self.connected = detail(spec.describe(target), "connected") if tcp else ""

    def result(self, code: int, duration_s: float, extra: int | bytes | None) -> ProbeResult:
        """What the engine's ``(code, duration, extra)`` says, as the Python probes say it."""
        spec, target = self.spec, self.target
        if code == _tcpengine.TIMEOUT:
            return timeout_result(spec, target, self.timeout_s)
        if isinstance(spec, TcpCheck):
            if code == 0:
                return ProbeResult(True, Reason.OK, self.connected, duration_s)
            reason, what = _failure(code)
            return ProbeResult(False, reason, detail(spec.describe(target), what), duration_s)
        status = extra if isinstance(extra, int) else None
        if code == 0 and status is not None:
            reason, what = Reason.OK, status_text(status)
        elif code == _tcpengine.HTTP_STATUS and status is not None:
            reason, what = Reason.STATUS, status_text(status)
        elif code == _tcpengine.HTTP_CLOSED_EARLY:
            reason, what = Reason.PROTOCOL, "connection closed without a response"
        elif code == _tcpengine.HTTP_BAD_LINE:
            reason, what = Reason.PROTOCOL, f"bad response: invalid status line {extra!r}"
        elif code == _tcpengine.HTTP_CLOSED_IN_HEAD:
            reason, what = Reason.PROTOCOL, "bad response: connection closed in the response head"
        elif code == _tcpengine.HTTP_HEAD_TOO_LONG:
            max_bytes = _tcpengine.MAX_HEAD_BYTES
            reason, what = Reason.PROTOCOL, f"bad response: head longer than {max_bytes} bytes"
        else:
            reason, what = _failure(code)
        return ProbeResult(
            reason is Reason.OK,
            reason,
            detail(spec.describe(target), what),
            duration_s,
            http_status=status,
        )


class NativeTcp(Generic[T]):
    """Plain TCP checks in the C engine on ``loop``; ``done(token, result, delay_s)`` for each.

    ``threads`` 0: one engine, run by the event loop.  ``threads`` N: N engines, each in a
    thread of its own (at ``nice`` relative to the process), the checks spread over them by
    count; each hands its results to the loop through its descriptor.  A handle says its engine
    (``handle % engines``) and its slot there (``handle // engines``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        done: DoneFn[T],
        *,
        max_in_flight: int,
        jitter: float,
        seed: int,
        duration_bounds: tuple[float, ...] = (),
        delay_bounds: tuple[float, ...] = (),
        threads: int = 0,
        nice: int = 0,
    ) -> None:
        assert _tcpengine is not None, "check available() first"
        self._loop = loop
        self._done = done
        count = max(1, threads)
        self._engines = [
            _tcpengine.Engine(
                max(1, max_in_flight // count),
                jitter,
                (seed + i) % 2**64,
                tuple(duration_bounds),
                tuple(delay_bounds),
                threads > 0,
                nice,
            )
            for i in range(count)
        ]
        self._entries: dict[int, _Entry[T]] = {}
        self._fds = [engine.fileno() for engine in self._engines]
        self._budget = BUDGET[0]
        self._draining = 0  # the engine drain() goes on with
        self.finished_at = 0.0  # time.monotonic() of the latest callback that finished a check
        for index, fd in enumerate(self._fds):
            loop.add_reader(fd, self._ready, index)

    @property
    def in_flight(self) -> int:
        return sum(engine.in_flight for engine in self._engines)

    @property
    def threads(self) -> int:
        """Engine threads (0: the engine runs on the event loop)."""
        return len(self._engines) if self._engines[0].threaded else 0

    def __len__(self) -> int:
        return len(self._entries)

    def _engine_of(self, handle: int) -> tuple[Any, int]:
        count = len(self._engines)
        return self._engines[handle % count], handle // count

    def _handle(self, index: int, slot: int) -> int:
        """The handle of ``slot`` in engine ``index`` (``_engine_of``'s inverse)."""
        return slot * len(self._engines) + index

    def add(
        self,
        token: T,
        spec: TcpCheck | HttpCheck,
        target: Target,
        interval_s: float,
        timeout_s: float,
        due: float,
        rise: int = 1,
    ) -> int:
        """Check ``target`` every ``interval_s`` from ``due`` (the loop's clock) on; returns the
        handle for ``remove``.  After a failure, until ``rise`` checks in a row succeed, its
        checks go ahead of any backlog (the engine's retry heap).  A TCP check's connected
        socket is closed as ``spec.close`` says; an HTTP check (``lean_http``) sends its request
        and judges the response's status.  ValueError: a check the engine cannot take (an
        address, a request h11 refuses: the caller runs that check in Python)."""
        port = target.port if spec.port is None else spec.port
        index = min(range(len(self._engines)), key=lambda i: len(self._engines[i]))
        engine = self._engines[index]
        if isinstance(spec, HttpCheck):
            if not lean_http(spec):
                raise ValueError("an HTTPS check, or one that reads the body")
            try:
                request = request_bytes(spec, target)
            except h11.LocalProtocolError as exc:
                raise ValueError(f"invalid request: {exc}") from exc
            slot = engine.add(
                target.address, port, interval_s, timeout_s, due, rise, False, request,
                spec.expect_status,
            )  # fmt: skip
        else:
            reset = spec.close == "reset"
            slot = engine.add(target.address, port, interval_s, timeout_s, due, rise, reset)
        handle = self._handle(index, slot)
        self._entries[handle] = _Entry(token, spec, target, timeout_s)
        return handle

    def remove(self, handle: int) -> None:
        """Stop checking; a connect in progress is closed and reports nothing."""
        del self._entries[handle]
        engine, slot = self._engine_of(handle)
        engine.remove(slot)

    def hold(self, held: bool) -> None:
        for engine in self._engines:
            engine.hold(held)

    def quiet(self, handle: int) -> None:
        """Count this check's successes (``drain``) until its next failure."""
        engine, slot = self._engine_of(handle)
        engine.quiet(slot, True)

    def drain_one(self, handle: int) -> QuietCount | None:
        """One check's quiet successes since they were last drained (None: none)."""
        engine, slot = self._engine_of(handle)
        got = engine.drain_one(slot)
        if got is None:
            return None
        n, total_s, counts, last_end, last_duration_s = got
        wall = last_end + time.time() - time.monotonic()
        return QuietCount(n, total_s, counts, wall, last_duration_s)

    def drain(self, limit: int) -> tuple[list[tuple[T, QuietCount]], DelayCount, bool]:
        """The quiet successes counted since they were last drained, for at most ``limit``
        checks from where the last call stopped (engine after engine), and the quiet successes'
        delays (those of the engines drained); True once the last check of the last engine was
        reached (the next call starts over)."""
        entries = self._entries
        count = len(self._engines)
        to_wall = time.time() - time.monotonic()  # the engine's clock is CLOCK_MONOTONIC
        counted: list[tuple[T, QuietCount]] = []
        delay_counts: list[int] | None = None
        delay_n, delay_total_s = 0, 0.0
        while True:
            index = self._draining
            checks, (counts_, n_, total_), done = self._engines[index].drain(limit - len(counted))
            if delay_counts is None:
                delay_counts = list(counts_)
            else:  # the same buckets in every engine
                delay_counts = [a + b for a, b in zip(delay_counts, counts_, strict=True)]
            delay_n += n_
            delay_total_s += total_
            for slot, n, total_s, counts, last_end, last_duration_s in checks:
                entry = entries.get(self._handle(index, slot))
                if entry is not None:
                    quiet = QuietCount(n, total_s, counts, last_end + to_wall, last_duration_s)
                    counted.append((entry.token, quiet))
            if done:
                self._draining = (index + 1) % count
            if not done or self._draining == 0 or len(counted) >= limit:
                break
        last = done and self._draining == 0  # the last engine's last check was reached
        return counted, (tuple(delay_counts or ()), delay_n, delay_total_s), last

    def close(self) -> None:
        for fd in self._fds:
            self._loop.remove_reader(fd)
        for engine in self._engines:
            engine.close()
        self._entries.clear()

    def _ready(self, index: int) -> None:
        entries, done = self._entries, self._done
        engine = self._engines[index]
        count = len(self._engines)
        began = time.monotonic()
        results = engine.run(self._budget)
        for slot, code, duration_s, delay_s, extra in results:
            entry = entries.get(slot * count + index)  # _handle, inline: once per result
            if entry is None:  # removed by a callback of this batch
                continue
            if code == 0 and extra is None:  # a TCP check connected: the hot path
                result = ProbeResult(True, Reason.OK, entry.connected, duration_s)
            else:
                result = entry.result(code, duration_s, extra)
            done(entry.token, result, delay_s)
        finished = engine.finished  # quiet ones too: their system calls take the time
        if finished:
            self.finished_at = ended = time.monotonic()
            per_result_s = (ended - began) / finished
            fits = int(CALLBACK_S / per_result_s) if per_result_s > 0 else BUDGET[1]
            self._budget = min(BUDGET[1], max(BUDGET[0], fits))
