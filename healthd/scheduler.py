"""Runs every distinct probe once per interval, and hands each result to a callback.

One timer heap for all probes (``ProbeKey``s): a single event-loop timer is armed for the
earliest due probe, and each wake-up starts every probe that is due.  First runs are staggered
uniformly over the first interval, later runs are jittered by +-``jitter`` of the interval.

The hot path costs no task and no future: a TCP check with the built-in probe is started
synchronously (``probes.tcp.tcp_start``), and when the handshake is already decided (a near
backend, an immediate refusal) its result is handled on the spot.  A connect still in progress
goes to the scheduler's ``probes.connects.ConnectWaiter`` (one epoll set for all of them, one
timer per distinct timeout; no task, no coroutine, no future, no loop handle per connect; with
backends a network away nearly every connect is still in progress when ``tcp_start`` returns).
Every other probe (HTTP, scripts, an injected ``probe`` function) runs as a task, with its
timeout enforced by cancellation (``asyncio.timeout``).  Either way a hung backend leaves no task or
socket behind.  At most ``max_concurrent`` probes wait on the network at once; due probes
beyond that wait in order.  A probe that raises (a bug, never a backend's fault) is logged and
counted as a failed result; the scheduler keeps going.  ``on_delay`` receives each probe's
schedule delay (actual start minus planned start).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from healthd.checkspec import CheckSpec, HttpCheck, ProbeResult, Reason, Target, TcpCheck
from healthd.histogram import DELAY_BUCKETS_S
from healthd.probes import native, probe_http_within, run_probe, timeout_result
from healthd.probes.connects import ConnectWaiter, Waiting
from healthd.probes.tcp import tcp_start
from healthd.state import ProbeKey

log = logging.getLogger("healthd.scheduler")

ProbeFn = Callable[[CheckSpec, Target], Awaitable[ProbeResult]]
ResultFn = Callable[[ProbeKey, ProbeResult], None]
DelayFn = Callable[[float], None]


class ProbeRunner(Protocol):
    """What the daemon uses of a scheduler: ``Scheduler``, ``workers.WorkerPool`` and
    ``autoworkers.AutoScheduler`` are one."""

    @property
    def completed(self) -> int: ...  # probes completed since start

    @property
    def in_flight(self) -> int: ...

    @property
    def engine_threads(self) -> int: ...  # the C engine's threads (0: on the event loop)

    @property
    def last_progress(self) -> float: ...  # time.monotonic() of the last completed probe

    @property
    def workers(self) -> int: ...  # worker processes running the probes (0: this process)

    async def run(self) -> None: ...

    def update(self, keys: Iterable[ProbeKey]) -> tuple[int, int]: ...

    async def probe_once(self, key: ProbeKey) -> ProbeResult: ...

    def drain(self) -> None: ...  # hand over what quiet checks counted (Quiet), now

    def drain_slices(self) -> Iterator[DrainStep]: ...  # the same, a slice per step


@dataclass(frozen=True)
class Quiet:
    """Settled successes of plain TCP and HTTP checks counted by the C engine, not reported one by
    one (``probes.native``): after each reported result ``settled(key, result)`` says whether
    the next successes would change nothing; what was counted goes to ``counted([(key, count),
    ...])`` (a slice of checks per call)
    and ``delays(counts, n, total_s)`` (bucketed by ``DELAY_BUCKETS_S``) at every ``drain()``,
    which runs every ``QUIET_DRAIN_S`` and whenever the caller needs the figures current."""

    settled: Callable[[ProbeKey, ProbeResult], bool]
    counted: Callable[[Sequence[tuple[ProbeKey, native.QuietCount]]], None]
    delays: Callable[[Sequence[int], int, float], None]
    duration_bounds: tuple[float, ...]


# The figures of quiet checks reach the metrics, the health book and the watchdog this often (a
# scrape drains them first): a drain costs Python per check counted, so a check run every second
# is counted a few times per drain.
QUIET_DRAIN_S = 5.0
# Probe workers and the C engine's threads run this much nicer than the daemon.  They exist
# because the probes need more than one core; busy on every CPU, they must not starve the
# kernel's packet processing (IPVS forwards the virtual servers' traffic in softirq, ksoftirqd
# when it is heavy: the probes' own packets go through it too) nor the daemon (verdicts, the
# kernel table, /metrics).  In the test VM, two workers at the daemon's priority kept both vCPUs
# busy and the kernel dropped packets: 16 and 24 real servers went down on false timeouts; at
# +10 and at +5, none, with detection within its bound; at +10 the workers also fell behind
# their schedule behind other busy processes, at +5 they kept it (docs/benchmarks.md).
PROBES_NICE = 5
DRAIN_SLICE = 256
# A step of drain_slices: None once a slice was handed over (the caller may give the loop a
# turn), or a future to await: the counts are on their way (probe workers, ``workers.py``).
DrainStep = asyncio.Future[None] | None

MAX_STARTS_PER_WAKE = 256  # then yield to the event loop (I/O, the API) before starting more
# ... or after this long: a slow machine starting hundreds of due probes in one go would hold up
# everything else on the loop (a reconcile pass awaits the kernel a dozen times) for that long.
MAX_WAKE_S = 0.005
# Probes due this close to a wake-up start with it: timers may fire a little early (uvloop's
# clock has a 1 ms resolution), and a wake-up that starts nothing would only spin.
WAKE_SLACK_S = 0.001
# A probe may also start up to this much early, at most EARLY_FRACTION of its interval, to share
# a wake-up with the one before: every wake-up costs a trip through the loop and an epoll_wait,
# as much again as the TCP probe itself when probes are spread thin (10 ms of a 1 s interval:
# -19% CPU per check at 1000 real servers; 40 ms, with half the probes in each of two workers:
# -10 to -15% of the workers' CPU at 5 000 checks/s on the host; the interval's own jitter is
# 100 ms).
EARLY_S = 0.040
EARLY_FRACTION = 0.05


class _Slot:
    """One probe's schedule: when it is due next, and its task while one runs."""

    __slots__ = ("due", "fast", "handle", "key", "live", "oks", "quiet", "retry", "started", "task")

    def __init__(self, key: ProbeKey, due: float, fast: bool) -> None:
        self.key = key
        self.due = due
        self.fast = fast  # a TCP check with the built-in probe: started synchronously
        self.live = True  # False once removed by update() or the end of run()
        self.task: asyncio.Task[None] | Waiting[_Slot] | None = None
        self.handle: int | None = None  # its handle in the C engine, which then runs it
        self.quiet = False  # the engine counts its successes (Quiet)
        self.started = due  # when its latest run began (the loop's clock)
        self.retry = False  # in question: it waits in the retry heap (see _retry)
        self.oks = key.timing.rise  # successes since its last failure, at most rise


class Scheduler:
    workers = 0  # probes run in this process

    def __init__(
        self,
        probes: Iterable[ProbeKey],
        on_result: ResultFn,
        *,
        max_concurrent: int = 1024,
        jitter: float = 0.1,
        probe: ProbeFn = run_probe,
        rng: random.Random | None = None,
        on_delay: DelayFn | None = None,
        use_native: bool | None = None,
        quiet: Quiet | None = None,
        engine_threads: int = 0,
    ) -> None:
        self._keys = list(probes)
        self._quiet = quiet
        # plain TCP checks in the C engine (probes.native): by default when it was built
        self._use_native = native.available() if use_native is None else use_native
        self._engine_threads = engine_threads
        self._on_result = on_result
        self._max_concurrent = max_concurrent
        self._jitter = jitter
        self._probe = probe
        self._rng = rng or random.Random()
        self._on_delay = on_delay
        self._tasks_in_flight = 0  # and connects in _connects
        self.completed = 0
        self._progress = time.monotonic()  # of the last probe reported (watchdog: last_progress)
        self._slots: dict[ProbeKey, _Slot] | None = None  # while running
        # The heap holds (due, number) and _queued maps the number to its slot: tuples of a
        # float and an int are dropped by the garbage collector's first look at them, while
        # (due, number, slot) would age through every generation, one per probe per interval.
        self._heap: list[tuple[float, int]] = []
        # Probes in question (the latest result a failure, or fewer than rise successes since
        # the last failure) wait here, due one interval after their last run began, and start
        # before the main heap's: behind schedule, the runs that confirm a failure (fall) or a
        # recovery (rise) do not queue behind the settled probes' backlog.
        self._retry: list[tuple[float, int]] = []
        self._queued: dict[int, _Slot] = {}
        self._order = itertools.count()
        self._waiting: deque[_Slot] = deque()  # due, but max_concurrent tasks are running
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._waking = False  # inside _wake: it arms the timer once at its end
        self._held = False  # hold(): no probe starts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connects: ConnectWaiter[_Slot] | None = None  # while running
        self._native: native.NativeTcp[_Slot] | None = None  # while running, if used

    @property
    def engine_share(self) -> float:
        """The share of the running probes the C engine runs (0 when none are running)."""
        if not self._slots or self._native is None:
            return 0.0
        return len(self._native) / len(self._slots)

    @property
    def engine_threads(self) -> int:
        """The C engine's threads (0: it runs on the event loop, or not at all)."""
        return self._native.threads if self._native is not None else 0

    @property
    def last_progress(self) -> float:
        """time.monotonic() of the last completed probe (the watchdog): reported, or finished
        by the C engine (counted quietly included)."""
        engine = self._native
        return self._progress if engine is None else max(self._progress, engine.finished_at)

    @last_progress.setter
    def last_progress(self, when: float) -> None:
        self._progress = when

    @property
    def in_flight(self) -> int:
        running = self._tasks_in_flight
        return running if self._native is None else running + self._native.in_flight

    async def run(self) -> None:
        """Probe until cancelled; cancelling stops every probe and cleans it up."""
        self._loop = asyncio.get_running_loop()
        self._connects = ConnectWaiter(self._loop, self._finished)
        if self._use_native and self._probe is run_probe:
            quiet = self._quiet
            self._native = native.NativeTcp(
                self._loop,
                self._native_done,
                max_in_flight=self._max_concurrent,
                jitter=self._jitter,
                seed=self._rng.getrandbits(64),
                duration_bounds=quiet.duration_bounds if quiet else (),
                delay_bounds=DELAY_BUCKETS_S if quiet else (),
                threads=self._engine_threads,
                nice=PROBES_NICE,
            )
        self._slots = {}
        drains = None
        try:
            self.update(self._keys)
            if self._native is not None and self._quiet is not None:
                drains = asyncio.create_task(self._drain_every(QUIET_DRAIN_S), name="drain")
            await self._loop.create_future()  # forever
        finally:
            if drains is not None:
                drains.cancel()
            self.drain()  # what was counted still counts
            slots = list(self._slots.values())
            self._slots = None
            self._heap.clear()
            self._retry.clear()
            self._queued.clear()
            self._waiting.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, math.inf
            tasks = []
            for slot in slots:
                slot.live = False
                running = slot.task
                if running is not None:
                    running.cancel()
                    if isinstance(running, asyncio.Task):
                        tasks.append(running)
            self._connects.close()
            self._connects = None
            if self._native is not None:
                self._native.close()
                self._native = None
            await asyncio.gather(*tasks, return_exceptions=True)

    def update(self, keys: Iterable[ProbeKey]) -> tuple[int, int]:
        """Probe exactly ``keys`` from now on: start new ones, stop the ones not listed.

        Probes that stay keep their schedule.  Returns (started, stopped).
        """
        wanted = dict.fromkeys(keys)
        self._keys = list(wanted)
        if self._slots is None or self._loop is None:
            return (0, 0)  # not running: run() starts them
        stopped = [k for k in self._slots if k not in wanted]
        for key in stopped:
            slot = self._slots.pop(key)
            slot.live = False  # its heap entry is skipped when it comes up
            if slot.handle is not None and self._native is not None:
                self._native.remove(slot.handle)
            if slot.task is not None:
                slot.task.cancel()
        started = [k for k in wanted if k not in self._slots]
        now = self._loop.time()
        builtin = self._probe is run_probe
        for key in started:
            due = now + self._rng.uniform(0, key.timing.interval_s)
            slot = _Slot(key, due, builtin and isinstance(key.spec, TcpCheck))
            self._slots[key] = slot
            # the engine says which checks it takes (ValueError: the rest run here)
            engine = builtin and isinstance(key.spec, TcpCheck | HttpCheck)
            if engine and self._native is not None and self._to_native(slot):
                continue
            self._push(slot)
        self._arm()
        return (len(started), len(stopped))

    def _to_native(self, slot: _Slot) -> bool:
        key, spec = slot.key, slot.key.spec
        assert self._native is not None and isinstance(spec, TcpCheck | HttpCheck)
        try:
            timing = key.timing
            slot.handle = self._native.add(
                slot, spec, key.target, timing.interval_s, timing.timeout_s, slot.due, timing.rise
            )
        except ValueError:  # a check the engine does not take (an address, a request): here
            return False
        return True

    async def probe_once(self, key: ProbeKey) -> ProbeResult:
        """One probe with its timeout; never raises except CancelledError."""
        started = time.monotonic()
        spec = key.spec
        if self._probe is run_probe and isinstance(spec, HttpCheck):
            try:  # its own deadline, with a last look at the socket (probes/lastlook.py)
                return await probe_http_within(spec, key.target, key.timing.timeout_s)
            except Exception as exc:
                return self._crashed(key, exc, started)
        return await self._guarded(key, self._probe(spec, key.target), started)

    def hold(self, held: bool) -> None:
        """Start no probe while held (back-pressure: nobody can take results now).

        Probes that come due meanwhile start when released, with their delay reported.
        """
        self._held = held
        if self._native is not None:
            self._native.hold(held)
        if held:
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, math.inf
        else:
            self._arm()

    # ---- the timer -------------------------------------------------------------------------

    def _push(self, slot: _Slot) -> None:
        number = next(self._order)
        self._queued[number] = slot
        heapq.heappush(self._retry if slot.retry else self._heap, (slot.due, number))

    def _arm(self) -> None:
        """Make sure the loop wakes us when the earliest probe is due."""
        queued = self._queued
        at = math.inf
        for heap in (self._retry, self._heap):
            while heap and not queued[heap[0][1]].live:
                del queued[heapq.heappop(heap)[1]]
            if heap:
                at = min(at, heap[0][0])
        if at == math.inf or self._loop is None or self._held:
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._wake)
        self._timer_at = at

    def _wake(self) -> None:
        self._timer, self._timer_at = None, math.inf
        loop = self._loop
        if loop is None or self._slots is None:
            return
        main, retry, queued = self._heap, self._retry, self._queued
        now = loop.time() + WAKE_SLACK_S
        early = now + EARLY_S

        def due_now(heap: list[tuple[float, int]]) -> bool:
            if not heap:
                return False
            due, number = heap[0]
            return due <= now or (
                due <= early and due - now <= queued[number].key.timing.interval_s * EARLY_FRACTION
            )

        self._waking = True
        until = time.monotonic() + MAX_WAKE_S
        try:
            for started in range(MAX_STARTS_PER_WAKE):
                if self._held:
                    break
                if due_now(retry):  # probes in question first, then the main heap
                    heap = retry
                elif due_now(main):
                    heap = main
                else:
                    break
                if started & 15 == 15 and time.monotonic() > until:
                    break  # the rest right after whatever else is ready on the loop
                slot = queued.pop(heapq.heappop(heap)[1])
                if not slot.live:
                    continue
                if self._tasks_in_flight >= self._max_concurrent:
                    if slot.retry:
                        self._waiting.appendleft(slot)  # ahead of the backlog here too
                    else:
                        self._waiting.append(slot)
                    continue
                self._start(slot, loop.time())
        finally:
            self._waking = False
            self._arm()

    # ---- running one probe -----------------------------------------------------------------

    def _start(self, slot: _Slot, now: float) -> None:
        key = slot.key
        slot.started = now
        if self._on_delay is not None:
            self._on_delay(max(0.0, now - slot.due))
        if slot.fast:
            assert isinstance(key.spec, TcpCheck)
            try:
                started = tcp_start(key.spec, key.target)
            except Exception as exc:
                self._done(slot, self._crashed(key, exc, time.monotonic()))
                return
            if isinstance(started, ProbeResult):
                self._done(slot, started)
                return
            assert self._connects is not None
            try:
                waiting = self._connects.wait(slot, started, key.timing.timeout_s)
            except Exception as exc:  # epoll refused the socket: never leak it
                started.close()
                self._done(slot, self._crashed(key, exc, started.start))
                return
            self._tasks_in_flight += 1
            slot.task = waiting
        else:
            self._spawn(slot, functools.partial(self.probe_once, key))

    def _spawn(self, slot: _Slot, probe: Callable[[], Awaitable[ProbeResult]]) -> None:
        # ``probe`` makes the coroutine inside the task: a task cancelled before its first step
        # (at shutdown) then leaves no coroutine that was never awaited.
        assert self._loop is not None
        self._tasks_in_flight += 1
        slot.task = self._loop.create_task(self._run_task(slot, probe))

    async def _run_task(self, slot: _Slot, probe: Callable[[], Awaitable[ProbeResult]]) -> None:
        result = None
        try:
            result = await probe()
        finally:
            self._finished(slot, result)

    def _finished(self, slot: _Slot, result: ProbeResult | None) -> None:
        """A probe waiting on the network ended, a task or a connect in progress (None:
        cancelled, no result)."""
        slot.task = None
        self._tasks_in_flight -= 1
        self._start_waiting()
        if result is not None:
            self._done(slot, result)

    async def _guarded(
        self, key: ProbeKey, probe: Awaitable[ProbeResult], started: float
    ) -> ProbeResult:
        try:
            async with asyncio.timeout(key.timing.timeout_s):
                return await probe
        except TimeoutError:
            return timeout_result(key.spec, key.target, key.timing.timeout_s)
        except Exception as exc:
            return self._crashed(key, exc, started)

    def _crashed(self, key: ProbeKey, exc: Exception, started: float) -> ProbeResult:
        log.error("probe %s raised; counted as failed", key.describe(), exc_info=exc)
        return ProbeResult(
            ok=False,
            reason=Reason.ERROR,
            detail=f"{key.describe()}: internal error: {exc!r}",
            duration_s=time.monotonic() - started,
        )

    def _start_waiting(self) -> None:
        loop = self._loop
        while self._waiting and self._tasks_in_flight < self._max_concurrent and loop is not None:
            slot = self._waiting.popleft()
            if slot.live and self._slots is not None:
                self._start(slot, loop.time())

    def _native_done(self, slot: _Slot, result: ProbeResult, delay_s: float) -> None:
        """A check the C engine ran (it has already scheduled the next)."""
        if self._on_delay is not None:
            self._on_delay(delay_s)
        quiet = self._quiet
        if (
            quiet is not None
            and slot.quiet
            and self._native is not None
            and slot.handle is not None
        ):
            # a quiet check reports again (a failure ended its counting): what it counted
            # before comes first, or it would land after the failure at the next drain
            slot.quiet = False
            count = self._native.drain_one(slot.handle)
            if count is not None:
                self.completed += count.n
                quiet.counted([(slot.key, count)])
        self._report(slot, result)
        if (
            quiet is not None
            and result.ok
            and slot.live
            and slot.handle is not None
            and self._native is not None
            and quiet.settled(slot.key, result)
        ):
            self._native.quiet(slot.handle)
            slot.quiet = True

    def drain(self) -> None:
        """Hand over everything quiet checks counted since it was last handed over (``Quiet``)."""
        for _ in self.drain_slices():
            pass

    def drain_slices(self) -> Iterator[DrainStep]:
        """``drain``, a slice of ``DRAIN_SLICE`` checks at a time: the caller may give the event
        loop a turn at each step (the counts of 10 000 checks take ~40 ms of Python)."""
        quiet, engine = self._quiet, self._native
        if quiet is None or engine is None:
            return
        done = False
        while not done:
            counted, (delay_counts, n, total_s), done = engine.drain(DRAIN_SLICE)
            pairs = [(slot.key, count) for slot, count in counted]
            self.completed += sum(count.n for _, count in pairs)
            try:
                quiet.counted(pairs)
            except Exception:
                log.exception("handling the counted results of %d checks failed", len(pairs))
            if n:
                self._progress = time.monotonic()
                quiet.delays(delay_counts, n, total_s)
            if not done:
                yield None

    async def _drain_every(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            for _ in self.drain_slices():
                await asyncio.sleep(0)  # (this scheduler's steps are all None)

    def _report(self, slot: _Slot, result: ProbeResult) -> None:
        self.completed += 1
        self._progress = time.monotonic()
        try:
            self._on_result(slot.key, result)
        except Exception:
            log.exception("handling the result of %s failed", slot.key.describe())

    def _done(self, slot: _Slot, result: ProbeResult) -> None:
        self._report(slot, result)
        loop = self._loop
        if not slot.live or loop is None:
            return
        interval = slot.key.timing.interval_s
        jitter = self._jitter
        # in question: planned from when this run began (see _retry)
        rise = slot.key.timing.rise
        slot.oks = min(slot.oks + 1, rise) if result.ok else 0
        slot.retry = slot.oks < rise
        since = slot.started if slot.retry else slot.due
        due = since + interval * (1 + self._rng.uniform(-jitter, jitter))
        now = loop.time()
        if due < now:  # fell behind (a slow probe or an overloaded loop): do not burst
            due = now
        slot.due = due
        self._push(slot)
        if due < self._timer_at and not self._waking:
            self._arm()
