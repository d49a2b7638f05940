"""Runs every distinct probe once per interval, and hands each result to a callback.

One asyncio task per ``ProbeKey``.  First runs are staggered uniformly over the first interval,
later runs are jittered by +-``jitter`` of the interval.  The timeout is enforced by cancellation
(``asyncio.timeout``), so a hung backend leaves no task or socket behind.  A semaphore bounds the
probes in flight.  A probe that raises (a bug, never a backend's fault) is logged and counted as
a failed result; the scheduler keeps going.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable

from healthd.checkspec import CheckSpec, ProbeResult, Reason, Target
from healthd.probes import run_probe, timeout_result
from healthd.state import ProbeKey

log = logging.getLogger("healthd.scheduler")

ProbeFn = Callable[[CheckSpec, Target], Awaitable[ProbeResult]]
ResultFn = Callable[[ProbeKey, ProbeResult], None]
DelayFn = Callable[[float], None]


class Scheduler:
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
    ) -> None:
        self._keys = list(probes)
        self._on_result = on_result
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._jitter = jitter
        self._probe = probe
        self._rng = rng or random.Random()
        self._on_delay = on_delay
        self.in_flight = 0
        self.completed = 0
        self.last_progress = time.monotonic()  # wall of the last completed probe (watchdog)
        self._tasks: dict[ProbeKey, asyncio.Task[None]] | None = None  # while running

    async def run(self) -> None:
        """Probe until cancelled; cancelling stops every probe and cleans it up."""
        self._tasks = {}
        try:
            self.update(self._keys)
            await asyncio.Event().wait()
        finally:
            tasks = list(self._tasks.values())
            self._tasks = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def update(self, keys: Iterable[ProbeKey]) -> tuple[int, int]:
        """Probe exactly ``keys`` from now on: start new ones, stop the ones not listed.

        Probes that stay keep their schedule.  Returns (started, stopped).
        """
        wanted = dict.fromkeys(keys)
        self._keys = list(wanted)
        if self._tasks is None:
            return (0, 0)  # not running: run() starts them
        stopped = [k for k in self._tasks if k not in wanted]
        for key in stopped:
            self._tasks.pop(key).cancel()
        started = [k for k in wanted if k not in self._tasks]
        for key in started:
            self._tasks[key] = asyncio.create_task(self._loop(key), name=f"probe {key.describe()}")
        return (len(started), len(stopped))

    async def probe_once(self, key: ProbeKey) -> ProbeResult:
        """One probe with its timeout; never raises except CancelledError."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(key.timing.timeout_s):
                return await self._probe(key.spec, key.target)
        except TimeoutError:
            return timeout_result(key.spec, key.target, key.timing.timeout_s)
        except Exception as exc:
            log.exception("probe %s raised; counted as failed", key.describe())
            return ProbeResult(
                ok=False,
                reason=Reason.ERROR,
                detail=f"{key.describe()}: internal error: {exc!r}",
                duration_s=time.monotonic() - started,
            )

    async def _loop(self, key: ProbeKey) -> None:
        loop = asyncio.get_running_loop()
        interval = key.timing.interval_s
        due = loop.time() + self._rng.uniform(0, interval)
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with self._semaphore:
                if self._on_delay is not None:
                    self._on_delay(max(0.0, loop.time() - due))
                self.in_flight += 1
                try:
                    result = await self.probe_once(key)
                finally:
                    self.in_flight -= 1
            self.completed += 1
            self.last_progress = time.monotonic()
            try:
                self._on_result(key, result)
            except Exception:
                log.exception("handling the result of %s failed", key.describe())
            due += interval * (1 + self._rng.uniform(-self._jitter, self._jitter))
            now = loop.time()
            if due < now:  # fell behind (a slow probe or an overloaded loop): do not burst
                due = now
