"""The reconcile loop against the in-memory IPVS stand-in that refuses what the kernel refuses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

import pytest
from probing import LoopTurns

from healthd import policy, reconciler
from healthd.config import parse_text
from healthd.ipvs.errors import IpvsInvalid, IpvsTransient
from healthd.ipvs.fake import FakeIpvs
from healthd.ipvs.port import IpvsPort
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    Desired,
    DesiredRealServer,
    DesiredVirtualServer,
    EditRealServer,
    Forwarding,
    Health,
    Observed,
    ObservedRealServer,
    ObservedVirtualServer,
    Op,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
)
from healthd.policy import RealServerStatus
from healthd.reconciler import Reconciler, apply_idempotent
from healthd.steps import STEP_REAL_SERVERS

CONFIG = parse_text(
    """
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    scheduler: rr
    checks: [{type: tcp}]
    real_servers:
      - {name: web-1, address: 192.168.1.101, port: 80, weight: 3}
      - {name: web-2, address: 192.168.1.102, port: 80, weight: 3}
""",
    "test.yaml",
)
VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
FOREIGN = VirtualServerKey.for_address(Protocol.TCP, "10.9.9.9", 443)
RS1 = RealServerKey("192.168.1.101", 80)
RS2 = RealServerKey("192.168.1.102", 80)


def weights(fake: FakeIpvs) -> dict[str, int]:
    return {str(k): v.spec.weight for k, v in fake.snapshot([VS])[VS].real_servers.items()}


def make(fake: FakeIpvs, status: dict[tuple[str, str], RealServerStatus]) -> Reconciler:
    return Reconciler(
        port=fake,
        desired=lambda: policy.desired(CONFIG, status),
        interval_s=0.2,
        min_interval_s=0.0,
    )


UP = RealServerStatus(Health.UP, "ok")
DOWN = RealServerStatus(Health.DOWN, "connection refused")


async def test_empty_kernel_gets_the_configured_table_then_nothing_more() -> None:
    fake = FakeIpvs()
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    rec = make(fake, status)
    first = await rec.reconcile_once()
    assert first.ok and rec.ready.is_set()
    assert weights(fake) == {"192.168.1.101:80": 3, "192.168.1.102:80": 3}
    assert fake.snapshot([VS])[VS].spec.scheduler == "rr"
    second = await rec.reconcile_once()
    assert second.applied == ()


async def test_health_change_drives_the_weight_and_back() -> None:
    fake = FakeIpvs()
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    rec = make(fake, status)
    await rec.reconcile_once()
    status[("web", "web-2")] = DOWN
    await rec.reconcile_once()
    assert weights(fake)["192.168.1.102:80"] == 0
    assert weights(fake)["192.168.1.101:80"] == 3
    status[("web", "web-2")] = UP
    await rec.reconcile_once()
    assert weights(fake)["192.168.1.102:80"] == 3


async def test_restart_over_a_live_table_changes_nothing_before_a_verdict() -> None:
    live = ObservedVirtualServer(
        VirtualServerSpec(VS, "rr"),
        {
            RS1: ObservedRealServer(RealServerSpec(RS1, Forwarding.NAT, 3)),
            RS2: ObservedRealServer(RealServerSpec(RS2, Forwarding.NAT, 0)),
        },
    )
    fake = FakeIpvs([live])
    rec = make(fake, {})  # no verdict for anyone yet
    result = await rec.reconcile_once()
    assert result.ok and result.applied == ()
    assert weights(fake) == {"192.168.1.101:80": 3, "192.168.1.102:80": 0}


async def test_hand_edits_are_repaired_and_foreign_virtual_servers_untouched() -> None:
    foreign = ObservedVirtualServer(
        VirtualServerSpec(FOREIGN, "wlc"),
        {RS1: ObservedRealServer(RealServerSpec(RS1, Forwarding.DR, 7))},
    )
    fake = FakeIpvs([foreign])
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    rec = make(fake, status)
    await rec.reconcile_once()
    before_foreign = fake.snapshot([FOREIGN])
    fake.apply_now(EditRealServer(VS, RealServerSpec(RS1, Forwarding.DR, 9)))  # ipvsadm -e
    fake.apply_now(
        AddRealServer(VS, RealServerSpec(RealServerKey("192.168.1.200", 80), Forwarding.NAT, 1))
    )  # ipvsadm -a
    fake.apply_now(DeleteRealServer(VS, RS2))  # ipvsadm -d
    await rec.reconcile_once()
    have = fake.snapshot([VS])[VS].real_servers
    assert set(have) == {RS1, RS2}
    assert have[RS1].spec == RealServerSpec(RS1, Forwarding.NAT, 3)
    assert fake.snapshot([FOREIGN]) == before_foreign


class FlakyPort:
    """Fails chosen operations once, like a kernel that refuses or a socket that overflows."""

    def __init__(self, inner: FakeIpvs, fail: type[Op], error: Exception) -> None:
        self.inner = inner
        self.fail = fail
        self.error: Exception | None = error

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        return await self.inner.dump(keys, like)

    async def apply(self, op: Op) -> None:
        if isinstance(op, self.fail) and self.error is not None:
            error, self.error = self.error, None
            raise error
        await self.inner.apply(op)

    async def close(self) -> None:
        return None


async def test_a_failed_operation_is_logged_counted_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeIpvs()
    port = FlakyPort(fake, AddRealServer, IpvsTransient("ENOBUFS (No buffer space available)"))
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    rec = Reconciler(
        port=port, desired=lambda: policy.desired(CONFIG, status), interval_s=30, min_interval_s=0.0
    )
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(rec.run())
    rec.poke()
    for _ in range(100):  # the retry comes one second after the failure, not at interval_s
        await asyncio.sleep(0.05)
        if len(weights(fake) if fake.snapshot([VS]) else {}) == 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert weights(fake) == {"192.168.1.101:80": 3, "192.168.1.102:80": 3}
    assert rec.stats.op_errors == {"add_real_server": 1}
    assert any("failed: ENOBUFS" in r.getMessage() for r in caplog.records)


async def test_each_operation_is_handed_on_as_the_kernel_answers_it() -> None:
    """``on_op`` (the event log's kernel_op) hears of each operation, applied or failed, before
    the next one is sent: its time is the kernel's answer, not the end of the pass."""
    fake = FakeIpvs()
    port = FlakyPort(fake, AddRealServer, IpvsTransient("ENOBUFS (No buffer space available)"))
    heard: list[tuple[str, str | None]] = []
    heard_before_apply: list[int] = []
    apply = port.apply

    async def counting_apply(op: Op) -> None:
        heard_before_apply.append(len(heard))
        await apply(op)

    port.apply = counting_apply  # type: ignore[method-assign]
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    rec = Reconciler(
        port=port,
        desired=lambda: policy.desired(CONFIG, status),
        on_op=lambda op, error: heard.append((str(op), error)),
    )
    result = await rec.reconcile_once()
    answered = [*result.applied, *(op for op, _ in result.failed)]
    assert sorted(text for text, _ in heard) == sorted(str(op) for op in answered)
    assert heard_before_apply == [0, 1, 2]  # the previous one was heard before each request
    assert [error for _, error in heard].count(None) == 2
    assert any(error and "ENOBUFS" in error for _, error in heard)


async def test_apply_idempotent_treats_exists_and_missing_as_done() -> None:
    fake = FakeIpvs()
    spec = VirtualServerSpec(VS, "rr")
    await fake.apply(AddVirtualServer(spec))
    assert await apply_idempotent(fake, AddVirtualServer(spec)) == "already"
    assert await apply_idempotent(fake, DeleteRealServer(VS, RS1)) == "already"
    # An edit of a real server that vanished meanwhile becomes an add.
    edit = EditRealServer(VS, RealServerSpec(RS1, Forwarding.NAT, 2))
    assert await apply_idempotent(fake, edit) == "added"
    assert weights(fake) == {"192.168.1.101:80": 2}
    with pytest.raises(IpvsInvalid):
        await apply_idempotent(fake, AddRealServer(VS, RealServerSpec(RS2, Forwarding.NAT, -1)))


async def test_pokes_are_merged_and_the_periodic_pass_runs_without_them() -> None:
    fake = FakeIpvs()
    rec = Reconciler(
        port=fake, desired=lambda: policy.desired(CONFIG, {}), interval_s=0.3, min_interval_s=0.1
    )
    task = asyncio.create_task(rec.run())
    for _ in range(20):
        rec.poke()
    await asyncio.sleep(0.05)
    poked = rec.stats.passes
    await asyncio.sleep(0.7)
    periodic = rec.stats.passes - poked
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert poked == 1  # twenty pokes, one pass
    assert 1 <= periodic <= 3  # then every interval_s on its own


class ExplodingPort(FlakyPort):
    """A port whose dump raises something unexpected once (a bug, not a kernel error)."""

    def __init__(self, inner: FakeIpvs) -> None:
        super().__init__(inner, AddRealServer, IpvsTransient("unused"))
        self.exploded = False

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        if not self.exploded:
            self.exploded = True
            raise KeyError("unexpected attribute in a dump")
        return await self.inner.dump(keys, like)

    async def apply(self, op: Op) -> None:
        await self.inner.apply(op)


async def test_an_unexpected_error_in_a_pass_does_not_stop_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeIpvs()
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    rec = Reconciler(
        port=ExplodingPort(fake),
        desired=lambda: policy.desired(CONFIG, status),
        interval_s=30,
        min_interval_s=0.0,
    )
    task = asyncio.create_task(rec.run())
    rec.poke()
    for _ in range(60):
        await asyncio.sleep(0.05)
        if fake.snapshot([VS]):
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert weights(fake) == {"192.168.1.101:80": 3, "192.168.1.102:80": 3}
    assert "reconcile pass crashed" in caplog.text


async def test_the_snapshot_shows_the_kernel_after_the_pass_applied_changes() -> None:
    fake = FakeIpvs()
    status = {("web", "web-1"): UP, ("web", "web-2"): DOWN}
    rec = make(fake, status)
    await rec.reconcile_once()
    have = rec.observed[VS].real_servers
    assert {str(k): v.spec.weight for k, v in have.items()} == {
        "192.168.1.101:80": 3,
        "192.168.1.102:80": 0,
    }


async def test_the_snapshot_keeps_the_kernel_adapters_objects_of_what_did_not_change() -> None:
    """The adapters return last dump's object for an unchanged real server (ipvs/dumps.py; the
    fake keeps its own): the snapshot is made of those, not of healthd's copies of what it
    added or edited, so the next pass finds them unchanged by identity, not field by field."""
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    fake = FakeIpvs()
    rec = Reconciler(port=fake, desired=lambda: policy.desired(CONFIG, status), interval_s=0.2)
    await rec.reconcile_once()  # adds both: the snapshot is what the kernel acknowledged
    await rec.reconcile_once()
    kernel = fake.snapshot([VS])[VS].real_servers
    first = rec.observed[VS].real_servers
    assert first[RS1] is kernel[RS1] and first[RS2] is kernel[RS2]
    status[("web", "web-2")] = DOWN
    await rec.reconcile_once()
    await rec.reconcile_once()
    have = rec.observed[VS].real_servers
    assert have[RS1] is first[RS1]
    assert have[RS2].spec.weight == 0  # what changed is the kernel's new value
    assert have[RS2] is fake.snapshot([VS])[VS].real_servers[RS2]
    assert rec.observed == fake.snapshot([VS])


async def test_a_pass_whose_requests_all_went_as_asked_reads_the_kernel_once() -> None:
    fake = FakeIpvs()
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    rec = make(fake, status)
    await rec.reconcile_once()  # builds the table: 3 requests
    assert fake.dumps == 1
    assert rec.observed == fake.snapshot([VS])
    fake.set_connections(VS, RS2, active=4, inactive=1)
    await rec.reconcile_once()  # nothing to change, reads the counters
    status[("web", "web-2")] = DOWN
    await rec.reconcile_once()  # one edit, acknowledged: no second dump
    assert fake.dumps == 3
    assert rec.observed == fake.snapshot([VS])
    assert rec.observed[VS].real_servers[RS2].active_connections == 4  # as last read


class RacingPort:
    """A kernel that someone else edits between healthd's dump and its requests."""

    def __init__(self, inner: FakeIpvs, edit: Op) -> None:
        self.inner = inner
        self.edit: Op | None = edit

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        observed = await self.inner.dump(keys, like)
        if self.edit is not None:
            self.inner.apply_now(self.edit)
            self.edit = None
        return observed

    async def apply(self, op: Op) -> None:
        await self.inner.apply(op)

    async def close(self) -> None:
        return None


async def test_a_pass_that_met_a_surprise_reads_the_kernel_back() -> None:
    fake = FakeIpvs()
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    await make(fake, status).reconcile_once()
    fake.apply_now(DeleteRealServer(VS, RS2))
    # between the dump and the add, someone adds web-2 by hand with another weight
    port = RacingPort(fake, AddRealServer(VS, RealServerSpec(RS2, Forwarding.NAT, 7)))
    rec = Reconciler(port=port, desired=lambda: policy.desired(CONFIG, status), interval_s=0.2)
    before = fake.dumps
    await rec.reconcile_once()
    assert fake.dumps == before + 2  # the add found it there: read back, not assumed
    assert rec.observed == fake.snapshot([VS])
    assert rec.observed[VS].real_servers[RS2].spec.weight == 7  # the next pass repairs it


async def test_a_mass_change_logs_the_first_operations_then_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from healthd.reconciler import LOGGED_OPS_PER_PASS

    n = LOGGED_OPS_PER_PASS + 49
    spec = VirtualServerSpec(VS, "rr")
    real_servers = {
        RealServerKey(f"10.1.{i // 250}.{i % 250 + 1}", 80): DesiredRealServer(
            RealServerSpec(RealServerKey(f"10.1.{i // 250}.{i % 250 + 1}", 80), Forwarding.NAT, 1),
            why="configured",
        )
        for i in range(n)
    }
    want = {VS: DesiredVirtualServer(spec, real_servers)}
    fake = FakeIpvs()
    rec = Reconciler(port=fake, desired=lambda: want, interval_s=1)
    with caplog.at_level(logging.DEBUG, logger="healthd.reconcile"):
        result = await rec.reconcile_once()
    assert len(result.applied) == n + 1 and len(fake.snapshot([VS])[VS].real_servers) == n
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    one_by_one = [m for m in info if m.startswith("kernel: add ")]
    assert len(one_by_one) == LOGGED_OPS_PER_PASS
    assert one_by_one[0].startswith("kernel: add virtual server TCP 10.0.0.1:80")
    rest = n + 1 - LOGGED_OPS_PER_PASS
    summary = f"kernel: {rest} more operations in this pass, not logged one by one: "
    assert [m for m in info if m.startswith(summary)] == [
        summary + f"{rest} add_real_server (each is logged at debug level, and in the event log "
        "if one is set)"
    ]
    assert len(debug) == n + 1 - LOGGED_OPS_PER_PASS  # every one is still there, at debug level
    assert all(m.startswith("kernel: add real server") for m in debug)


class SlowPort(FakeIpvs):
    """The kernel answering each request at once, but each taking 1 ms (no trip through the
    loop, like the adapters reading an answer already on the socket)."""

    async def apply(self, op: Op) -> None:
        time.sleep(0.001)
        await super().apply(op)


async def test_a_long_pass_lets_the_event_loop_run_between_slices() -> None:
    n = 60
    want = {
        VS: DesiredVirtualServer(
            VirtualServerSpec(VS, "rr"),
            {
                RealServerKey(f"10.1.0.{i + 1}", 80): DesiredRealServer(
                    RealServerSpec(RealServerKey(f"10.1.0.{i + 1}", 80), Forwarding.NAT, 1),
                    why="configured",
                )
                for i in range(n)
            },
        )
    }
    port = SlowPort()
    rec = Reconciler(port=port, desired=lambda: want, interval_s=1)
    seen: list[int] = []  # real servers in the table each time the loop got to run
    loop = asyncio.get_running_loop()

    def tick() -> None:
        table = port.snapshot([VS]).get(VS)
        seen.append(len(table.real_servers) if table else 0)
        if len(seen) < 1000:
            loop.call_soon(tick)

    loop.call_soon(tick)
    result = await rec.reconcile_once()
    assert result.ok and len(result.applied) == n + 1
    during = [k for k in seen if 0 < k < n]
    # the loop ran while the pass was half-way, several times (every ~5 ms of a ~60 ms pass)
    assert len(set(during)) >= 3


async def test_a_pass_over_thousands_of_real_servers_lets_the_loop_run_between_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The diff of a large table runs in steps (healthd.steps): other tasks (the probes due) get
    the loop between them, and the pass still repairs what differs."""
    monkeypatch.setattr(reconciler, "COMPUTE_SLICE_S", 0.0)  # give the loop back at every step
    keys = [RealServerKey(f"10.1.{i // 250}.{i % 250 + 1}", 80) for i in range(3000)]
    specs = {k: RealServerSpec(k, Forwarding.NAT, 1) for k in keys}
    desired = {
        VS: DesiredVirtualServer(
            VirtualServerSpec(VS, "rr"), {k: DesiredRealServer(s) for k, s in specs.items()}
        )
    }
    kernel = dict(specs)
    kernel[keys[7]] = RealServerSpec(keys[7], Forwarding.NAT, 5)  # changed by hand
    fake = FakeIpvs(
        [
            ObservedVirtualServer(
                VirtualServerSpec(VS, "rr"), {k: ObservedRealServer(s) for k, s in kernel.items()}
            )
        ]
    )
    rec = Reconciler(port=fake, desired=lambda: desired, interval_s=5.0)
    async with LoopTurns() as turns:
        result = await rec.reconcile_once()
    assert [type(op) for op in result.applied] == [EditRealServer]
    assert fake.snapshot([VS])[VS].real_servers[keys[7]].spec.weight == 1
    # plan walks 3 000 real servers, STEP_REAL_SERVERS at a time
    assert turns.count >= 3000 // STEP_REAL_SERVERS


# ---- a pass applies what changed first, against its snapshot, then reads the kernel ---------


class CachedDesired:
    """The desired table as the daemon keeps it (``Runtime.desired``): entries that did not
    change keep their objects from one call to the next."""

    def __init__(self, status: dict[tuple[str, str], RealServerStatus]) -> None:
        self.status = status
        self.table: policy.Desired | None = None
        self.basis: policy.Basis | None = None

    def __call__(self) -> policy.Desired:
        self.table = policy.desired(CONFIG, self.status, previous=self.table, basis=self.basis)
        self.basis = policy.Basis(CONFIG, dict(self.status), {})
        return self.table


class LoggingPort:
    """The fake kernel, with the order of healthd's requests; ``during_dump`` runs inside the
    next dump (something that happens while the kernel is read)."""

    def __init__(self, inner: FakeIpvs) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.during_dump: list[Callable[[], None]] = []

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        self.calls.append("dump")
        for action in self.during_dump:
            action()
        self.during_dump.clear()
        return await self.inner.dump(keys, like)

    async def apply(self, op: Op) -> None:
        self.calls.append(str(op))
        await self.inner.apply(op)

    async def close(self) -> None:
        return None


async def settled(
    port: IpvsPort,
) -> tuple[Reconciler, dict[tuple[str, str], RealServerStatus]]:
    """A reconciler whose first pass built the table, both real servers up; their statuses,
    to change."""
    status = {("web", "web-1"): UP, ("web", "web-2"): UP}
    rec = Reconciler(port=port, desired=CachedDesired(status), interval_s=0.2)
    await rec.reconcile_once()
    return rec, status


async def test_a_verdict_reaches_the_kernel_before_the_pass_reads_it() -> None:
    fake = FakeIpvs()
    port = LoggingPort(fake)
    rec, status = await settled(port)
    port.calls.clear()
    status[("web", "web-2")] = DOWN
    result = await rec.reconcile_once()
    edit = "edit real server TCP 10.0.0.1:80 -> 192.168.1.102:80 nat weight 0"
    assert port.calls == [edit, "dump"]  # applied once, then the kernel read
    assert [str(op) for op in result.applied] == [edit] and result.ok
    assert weights(fake) == {"192.168.1.101:80": 3, "192.168.1.102:80": 0}
    port.calls.clear()
    await rec.reconcile_once()  # nothing changed: the read finds the kernel as wanted
    assert port.calls == ["dump"]


async def test_a_verdict_that_comes_during_the_read_is_applied_by_that_pass() -> None:
    fake = FakeIpvs()
    port = LoggingPort(fake)
    rec, status = await settled(port)
    port.during_dump.append(lambda: status.update({("web", "web-1"): DOWN}))
    result = await rec.reconcile_once()
    assert [str(op) for op in result.applied] == [
        "edit real server TCP 10.0.0.1:80 -> 192.168.1.101:80 nat weight 0"
    ]
    assert weights(fake) == {"192.168.1.101:80": 0, "192.168.1.102:80": 3}


async def test_a_snapshot_the_kernel_no_longer_matches_is_repaired_by_the_same_pass() -> None:
    """By hand, after the last pass: web-2 deleted, web-1's weight changed.  web-2's verdict is
    applied from the snapshot (its edit finds it gone and adds it back); the read that follows
    repairs web-1."""
    fake = FakeIpvs()
    rec, status = await settled(fake)
    fake.apply_now(DeleteRealServer(VS, RS2))
    fake.apply_now(EditRealServer(VS, RealServerSpec(RS1, Forwarding.NAT, 9)))
    status[("web", "web-2")] = DOWN
    result = await rec.reconcile_once()
    assert result.ok
    assert weights(fake) == {"192.168.1.101:80": 3, "192.168.1.102:80": 0}
    assert rec.observed == fake.snapshot([VS])


async def test_an_early_operation_that_fails_is_planned_again_after_the_read() -> None:
    fake = FakeIpvs()
    port = FlakyPort(fake, EditRealServer, IpvsTransient("ENOBUFS (No buffer space available)"))
    rec, status = await settled(port)
    status[("web", "web-2")] = DOWN
    result = await rec.reconcile_once()
    assert weights(fake)["192.168.1.102:80"] == 0  # the pass's own plan applied it
    assert not result.ok and len(result.failed) == 1  # the failure is reported and counted
    assert rec.stats.op_errors == {"edit_real_server": 1}
