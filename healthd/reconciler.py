"""The level-triggered reconcile loop: events mark dirty; a pass reads the kernel, diffs, applies.

``poke()`` only marks the state dirty.  A pass computes the desired table from all current
health; first applies what changed since the last pass, planned against that pass's snapshot
(``plan_changes``: a verdict's weight does not wait for a read of the whole table); then dumps
the kernel's state of the configured virtual servers, takes the desired table again (verdicts
that came during the read) and applies ``plan()``, one request at a time (one in flight: a
netlink socket with many requests in flight drops ACKs and hangs), and records the outcome.
Passes are merged, at most one per ``min_interval_s``, and forced every ``interval_s`` so a
missed event, a restart or a hand-run ipvsadm heals.  A failed operation is
logged and counted, and retried on a pass one second later; the loop never dies of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from healthd.ipvs.errors import IpvsError, IpvsExists, IpvsNotFound
from healthd.ipvs.port import IpvsPort
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    Desired,
    EditRealServer,
    EditVirtualServer,
    Observed,
    Op,
)
from healthd.plan import expected_after, plan_changes, plan_steps, plan_teardown
from healthd.steps import Steps

log = logging.getLogger("healthd.reconcile")
_R = TypeVar("_R")

RETRY_AFTER_ERROR_S = 1.0
# Operations logged one by one per pass; the rest are counted in one line (and logged at debug
# level).  A mass change (a reload adding 10 000 real servers, a rack going down) is otherwise
# thousands of lines, and their logging cost more than the kernel requests themselves; every
# real server's own state change is logged anyway, and the event log keeps every operation.
LOGGED_OPS_PER_PASS = 100
# A pass of many operations lets the loop run (probes due, results, scrapes) this often: the
# adapters read an answer the kernel has ready without a trip through the loop, so a pass of
# 1 000 adds would otherwise hold it for its whole length (seconds in the test VM).
APPLY_SLICE_S = 0.005
# The pure computation over whole tables (plan) runs in steps; the loop is given back this
# often.  At 18 000 real servers the walks took 20-45 ms per pass in one go, and the probes
# due meanwhile started late (1-2 % of all starts 25-100 ms late at 18 000 checks/s).
COMPUTE_SLICE_S = 0.002


@dataclass(frozen=True, slots=True)
class PassResult:
    ok: bool
    duration_s: float
    applied: tuple[Op, ...] = ()
    failed: tuple[tuple[Op, str], ...] = ()
    error: str = ""  # the dump failed


@dataclass
class ReconcileStats:
    passes: int = 0
    failed_passes: int = 0
    last_success_monotonic: float | None = None
    ops_applied: dict[str, int] = field(default_factory=dict)
    op_errors: dict[str, int] = field(default_factory=dict)


async def apply_idempotent(port: IpvsPort, op: Op) -> str:
    """Apply ``op``; an add that finds it there or a delete that finds it gone is success.

    Returns "applied", "already" (the kernel was already as asked) or "added" (an edit of
    something that had vanished meanwhile became an add).
    """
    try:
        await port.apply(op)
        return "applied"
    except IpvsExists:
        if isinstance(op, AddVirtualServer | AddRealServer):
            return "already"
        raise
    except IpvsNotFound:
        if isinstance(op, DeleteVirtualServer | DeleteRealServer):
            return "already"
        if isinstance(op, EditRealServer):
            await port.apply(AddRealServer(op.virtual_server, op.spec, op.reason))
            return "added"
        if isinstance(op, EditVirtualServer):
            await port.apply(AddVirtualServer(op.spec, op.reason))
            return "added"
        raise


def op_kind(op: Op) -> str:
    return {
        AddVirtualServer: "add_virtual_server",
        EditVirtualServer: "edit_virtual_server",
        DeleteVirtualServer: "delete_virtual_server",
        AddRealServer: "add_real_server",
        EditRealServer: "edit_real_server",
        DeleteRealServer: "delete_real_server",
    }[type(op)]


class Reconciler:
    def __init__(
        self,
        *,
        port: IpvsPort,
        desired: Callable[[], Desired],
        interval_s: float = 5.0,
        min_interval_s: float = 0.05,
        op_timeout_s: float = 10.0,
        on_pass: Callable[[PassResult], Awaitable[None]] | None = None,
        on_op: Callable[[Op, str | None], None] | None = None,
        dry_run: bool = False,
    ) -> None:
        self._port = port
        self._desired = desired
        self._interval_s = interval_s
        self._min_interval_s = min_interval_s
        self._op_timeout_s = op_timeout_s
        self._on_pass = on_pass
        self._on_op = on_op  # each operation as the kernel answered it (error None: applied)
        self._verb = "dry-run: would" if dry_run else "kernel:"
        self._dirty = asyncio.Event()
        self._last_pass = float("-inf")
        self.observed: Observed = {}  # the kernel as of the latest pass (for metrics and status)
        self.stats = ReconcileStats()
        self.ready = asyncio.Event()  # set after the first successful pass
        self._current: asyncio.Task[PassResult] | None = None
        # the desired table the last pass brought the kernel (and ``observed``) in line with;
        # None after a failure or a surprise: the next pass plans from the kernel only
        self._planned: Desired | None = None

    def poke(self) -> None:
        """Something changed: run a pass soon.  Carries no command."""
        self._dirty.set()

    async def run(self) -> None:
        """Pass after pass until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(self._interval_s):
                    await self._dirty.wait()
            except TimeoutError:
                pass  # periodic pass
            wait = self._last_pass + self._min_interval_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            self._last_pass = loop.time()
            self._current = asyncio.ensure_future(self.reconcile_once())
            try:
                result = await asyncio.shield(self._current)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop reconciliation: log it, retry the pass
                log.exception("reconcile pass crashed; retrying in %gs", RETRY_AFTER_ERROR_S)
                self.stats.failed_passes += 1
                loop.call_later(RETRY_AFTER_ERROR_S, self.poke)
                continue
            if not result.ok:
                loop.call_later(RETRY_AFTER_ERROR_S, self.poke)

    async def finish(self) -> None:
        """Wait for the pass in flight, if any (after ``run`` was cancelled: graceful stop)."""
        if self._current is not None and not self._current.done():
            await self._current

    async def reconcile_once(self) -> PassResult:
        started = time.monotonic()
        desired = self._desired()
        self.stats.passes += 1
        # First what changed since the last pass (a verdict, an override), planned against
        # that pass's snapshot: a dead real server's weight 0 does not wait for a read of the
        # whole table (at 5 000 real servers in the test VM, most of a pass).
        early_applied: tuple[Op, ...] = ()
        early_failed: tuple[tuple[Op, str], ...] = ()
        if self._planned is not None and desired is not self._planned:
            early = plan_changes(self._planned, desired, self.observed)
            if early:
                early_applied, early_failed, as_asked = await self._apply_all(early)
                self.observed = expected_after(self.observed, early_applied)
                self._planned = desired if as_asked else None
        # Then the kernel is read, and the whole table planned and applied.
        keys = desired.keys()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                observed = await self._port.dump(keys, desired)
        except (IpvsError, TimeoutError, OSError) as exc:
            message = f"reading the IPVS table failed: {exc or type(exc).__name__}"
            log.error("%s; retrying", message)
            self._planned = None
            return await self._finish(
                PassResult(
                    False,
                    time.monotonic() - started,
                    early_applied,
                    early_failed,
                    error=message,
                )
            )
        # The dump's own objects: both adapters return last dump's object for a real server whose
        # message is unchanged (ipvs/dumps.py), so the snapshot keeps them from pass to pass.
        # (Mapping them back onto last pass's equal objects, as once done, compared thousands of
        # objects field by field on every pass: those healthd added or edited are its own
        # copies, equal to the dump's but never the same object.)
        self.observed = observed
        latest = self._desired()  # with the verdicts that came during the read
        if latest.keys() == keys:
            desired = latest
        ops = await _sliced(plan_steps(desired, observed))
        applied, failed, as_asked = await self._apply_all(ops)
        # keep the snapshot that metrics and status read true to the kernel: what it
        # acknowledged when every request went as planned, else read it back
        fresh = True
        if as_asked:
            self.observed = expected_after(observed, applied)
        elif applied:
            fresh = False
            with contextlib.suppress(IpvsError, TimeoutError, OSError):
                async with asyncio.timeout(self._op_timeout_s):
                    self.observed = await self._port.dump(keys, desired)
                    fresh = True
        ok = not failed and not early_failed
        self._planned = desired if ok and fresh else None
        return await self._finish(
            PassResult(
                ok,
                time.monotonic() - started,
                early_applied + applied,
                early_failed + failed,
            )
        )

    async def teardown(self) -> PassResult:
        """Delete the configured virtual servers (``on_stop: remove``)."""
        started = time.monotonic()
        desired = self._desired()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                observed = await self._port.dump(desired.keys())
        except (IpvsError, TimeoutError, OSError) as exc:
            log.error("shutdown cleanup: reading the IPVS table failed: %s", exc)
            return PassResult(False, time.monotonic() - started, error=str(exc))
        applied, failed, _ = await self._apply_all(plan_teardown(desired, observed))
        return PassResult(not failed, time.monotonic() - started, applied, failed)

    async def _apply_all(
        self, ops: list[Op]
    ) -> tuple[tuple[Op, ...], tuple[tuple[Op, str], ...], bool]:
        """Apply ``ops`` in order: (applied, failed, whether each went exactly as asked)."""
        applied: list[Op] = []
        failed: list[tuple[Op, str]] = []
        as_asked = True
        unlogged: dict[str, int] = {}
        slice_end = time.monotonic() + APPLY_SLICE_S
        for op in ops:
            if time.monotonic() > slice_end:
                await asyncio.sleep(0)
                slice_end = time.monotonic() + APPLY_SLICE_S
            kind = op_kind(op)
            try:
                # asyncio.timeout, not wait_for: no task per op, so an answer the kernel has
                # ready (the raw adapter reads it at once) costs no trip through the loop
                async with asyncio.timeout(self._op_timeout_s):
                    outcome = await apply_idempotent(self._port, op)
            except (IpvsError, TimeoutError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                failed.append((op, reason))
                if self._on_op is not None:
                    self._on_op(op, reason)
                self.stats.op_errors[kind] = self.stats.op_errors.get(kind, 0) + 1
                log.error(
                    "%s %s failed: %s (wanted because: %s); will retry",
                    self._verb,
                    op,
                    reason,
                    op.reason,
                )
                continue
            applied.append(op)
            if self._on_op is not None:
                self._on_op(op, None)
            as_asked = as_asked and outcome == "applied"
            self.stats.ops_applied[kind] = self.stats.ops_applied.get(kind, 0) + 1
            suffix = {"already": " (already so)", "added": " (it had vanished: added)"}.get(
                outcome, ""
            )
            if len(applied) <= LOGGED_OPS_PER_PASS:
                log.info("%s %s%s; because: %s", self._verb, op, suffix, op.reason)
            else:
                unlogged[kind] = unlogged.get(kind, 0) + 1
                log.debug("%s %s%s; because: %s", self._verb, op, suffix, op.reason)
        if unlogged:
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(unlogged.items()))
            log.info(
                "%s %d more operations in this pass, not logged one by one: %s "
                "(each is logged at debug level, and in the event log if one is set)",
                self._verb,
                sum(unlogged.values()),
                counts,
            )
        return tuple(applied), tuple(failed), as_asked and not failed

    async def _finish(self, result: PassResult) -> PassResult:
        if result.ok:
            self.stats.last_success_monotonic = time.monotonic()
            if not self.ready.is_set():
                self.ready.set()
                log.info("first reconcile pass succeeded: ready")
        else:
            self.stats.failed_passes += 1
        if self._on_pass is not None:
            await self._on_pass(result)
        return result


async def _sliced(steps: Steps[_R]) -> _R:
    """Run a stepped computation (healthd.steps), giving the loop back every COMPUTE_SLICE_S."""
    slice_end = time.monotonic() + COMPUTE_SLICE_S
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: _R = done.value
            return result
        if time.monotonic() > slice_end:
            await asyncio.sleep(0)
            slice_end = time.monotonic() + COMPUTE_SLICE_S
