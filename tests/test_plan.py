"""plan(desired, observed): golden cases from plan.py's docstring, and a convergence property."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from healthd.config import load
from healthd.ipvs.fake import FakeIpvs
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    Desired,
    DesiredRealServer,
    DesiredVirtualServer,
    EditRealServer,
    EditVirtualServer,
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
from healthd.plan import expected_after, plan, plan_changes, plan_teardown, wanted_weight
from healthd.policy import RealServerStatus, desired

REPO = Path(__file__).resolve().parents[1]

VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
OTHER = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.9", 80)
NAT, DR = Forwarding.NAT, Forwarding.DR


def rs(address: str, weight: int = 1, forwarding: Forwarding = NAT) -> RealServerSpec:
    return RealServerSpec(RealServerKey(address, 80), forwarding, weight)


def want(spec: VirtualServerSpec, *real_servers: RealServerSpec | DesiredRealServer) -> Desired:
    items = [r if isinstance(r, DesiredRealServer) else DesiredRealServer(r) for r in real_servers]
    return {spec.key: DesiredVirtualServer(spec, {d.spec.key: d for d in items})}


def have(spec: VirtualServerSpec, *real_servers: RealServerSpec) -> Observed:
    return {
        spec.key: ObservedVirtualServer(spec, {r.key: ObservedRealServer(r) for r in real_servers})
    }


RR = VirtualServerSpec(VS, "rr")
A, B, C = "192.168.1.101", "192.168.1.102", "192.168.1.103"


def texts(ops: list[Op]) -> list[str]:
    return [str(op) for op in ops]


def vs_of(op: Op) -> VirtualServerKey:
    if isinstance(op, AddVirtualServer | EditVirtualServer):
        return op.spec.key
    if isinstance(op, DeleteVirtualServer):
        return op.key
    return op.virtual_server


# ---- golden cases -------------------------------------------------------------------------------


def test_seed_config_on_an_empty_kernel_adds_the_virtual_server_then_its_real_servers() -> None:
    config = load(str(REPO / "etc" / "healthd.yaml"))
    healthy = {
        (vs.name, r.name): RealServerStatus(Health.UP, "ok")
        for vs in config.virtual_servers
        for r in vs.real_servers
    }
    # The ipvsadm commands the example file says it stands for.
    assert texts(plan(desired(config, healthy), {})) == [
        "add virtual server TCP 10.0.0.1:80 scheduler rr",
        "add real server TCP 10.0.0.1:80 -> 192.168.1.101:80 nat weight 1",
        "add real server TCP 10.0.0.1:80 -> 192.168.1.102:80 nat weight 1",
        "add real server TCP 10.0.0.1:80 -> 192.168.1.103:80 nat weight 1",
    ]


def test_in_sync_kernel_needs_nothing() -> None:
    assert plan(want(RR, rs(A), rs(B)), have(RR, rs(B), rs(A))) == []


def test_weight_changed_by_hand_is_edited_back() -> None:
    ops = plan(want(RR, rs(A), rs(B)), have(RR, rs(A), rs(B, weight=5)))
    assert texts(ops) == [f"edit real server TCP 10.0.0.1:80 -> {B}:80 nat weight 1"]
    assert isinstance(ops[0], EditRealServer)
    assert "weight 5 -> 1" in ops[0].reason


def test_forwarding_changed_by_hand_is_edited_back() -> None:
    ops = plan(want(RR, rs(A)), have(RR, rs(A, forwarding=DR)))
    assert ops == [EditRealServer(VS, rs(A), reason=ops[0].reason)]
    assert "forwarding dr -> nat" in ops[0].reason


def test_thresholds_changed_by_hand_are_edited_back() -> None:
    ops = plan(want(RR, rs(A)), have(RR, replace(rs(A), upper_threshold=100)))
    assert ops == [EditRealServer(VS, rs(A), reason=ops[0].reason)]


def test_extra_real_server_in_an_owned_virtual_server_is_deleted() -> None:
    ops = plan(want(RR, rs(A)), have(RR, rs(A), rs(C)))
    assert ops == [DeleteRealServer(VS, rs(C).key, reason=ops[0].reason)]
    assert "not in the configuration" in ops[0].reason


def test_virtual_server_not_in_desired_is_never_touched() -> None:
    foreign = VirtualServerSpec(OTHER, "wlc")
    observed = {**have(RR, rs(A)), **have(foreign, rs(B, weight=9), rs(C, forwarding=DR))}
    assert plan(want(RR, rs(A)), observed) == []
    # Even when healthd owns nothing that exists: it adds its own, and only its own.
    ops = plan(want(RR, rs(A)), have(foreign, rs(A, weight=0)))
    assert ops
    assert {vs_of(op) for op in ops} == {VS}


def test_scheduler_change_edits_the_virtual_server() -> None:
    ops = plan(want(RR, rs(A)), have(VirtualServerSpec(VS, "wlc"), rs(A)))
    assert ops == [EditVirtualServer(RR, reason=ops[0].reason)]
    assert "scheduler wlc -> rr" in ops[0].reason
    assert texts(ops) == ["edit virtual server TCP 10.0.0.1:80 scheduler rr"]


def test_persistence_change_edits_the_virtual_server() -> None:
    sticky = VirtualServerSpec(VS, "rr", persistence_timeout_s=300)
    ops = plan(want(sticky, rs(A)), have(RR, rs(A)))
    assert ops == [EditVirtualServer(sticky, reason=ops[0].reason)]
    assert texts(ops) == ["edit virtual server TCP 10.0.0.1:80 scheduler rr persistent 300"]


def test_adopt_weight_keeps_the_observed_weight() -> None:
    adopt = DesiredRealServer(rs(A, weight=0), adopt_weight=True)
    assert plan(want(RR, adopt), have(RR, rs(A, weight=7))) == []
    # Other attributes are still repaired, at the kernel's weight.
    ops = plan(want(RR, adopt), have(RR, rs(A, weight=7, forwarding=DR)))
    assert ops == [EditRealServer(VS, rs(A, weight=7), reason=ops[0].reason)]
    # Absent and allowed to be added: added with the desired weight.
    assert texts(plan(want(RR, adopt), have(RR))) == [
        f"add real server TCP 10.0.0.1:80 -> {A}:80 nat weight 0"
    ]


def test_add_if_absent_false_leaves_it_absent() -> None:
    lazy = DesiredRealServer(rs(A), adopt_weight=True, add_if_absent=False)
    assert plan(want(RR, lazy), have(RR)) == []
    # Not even when the whole virtual server is being created.
    assert texts(plan(want(RR, lazy, rs(B)), {})) == [
        "add virtual server TCP 10.0.0.1:80 scheduler rr",
        f"add real server TCP 10.0.0.1:80 -> {B}:80 nat weight 1",
    ]
    # But if it is there, it stays.
    assert plan(want(RR, lazy), have(RR, rs(A, weight=4))) == []


def test_present_false_deletes_it_and_never_adds_it() -> None:
    gone = DesiredRealServer(rs(A), why="web/a down: refused", present=False)
    ops = plan(want(RR, gone), have(RR, rs(A)))
    assert ops == [DeleteRealServer(VS, rs(A).key, reason="web/a down: refused")]
    assert plan(want(RR, gone), have(RR)) == []
    assert texts(plan(want(RR, gone), {})) == ["add virtual server TCP 10.0.0.1:80 scheduler rr"]


def test_order_inside_one_virtual_server_edit_vs_then_deletes_edits_adds() -> None:
    d = want(
        RR,
        rs("192.168.1.1"),  # to add
        rs("192.168.1.2"),  # to add
        rs("192.168.1.3", weight=2),  # to edit
        rs("192.168.1.4", weight=2),  # to edit
        DesiredRealServer(rs("192.168.1.5"), present=False),  # to delete
    )
    o = have(
        VirtualServerSpec(VS, "wlc"),
        rs("192.168.1.4"),
        rs("192.168.1.3"),
        rs("192.168.1.5"),
        rs("192.168.1.6"),  # not configured: delete
    )
    kinds = [type(op).__name__ for op in plan(d, o)]
    assert kinds == [
        "EditVirtualServer",
        "DeleteRealServer",
        "DeleteRealServer",
        "EditRealServer",
        "EditRealServer",
        "AddRealServer",
        "AddRealServer",
    ]
    ops = plan(d, o)
    assert [op.spec.key.address for op in ops if isinstance(op, EditRealServer)] == [
        "192.168.1.3",
        "192.168.1.4",
    ]
    assert [op.spec.key.address for op in ops if isinstance(op, AddRealServer)] == [
        "192.168.1.1",
        "192.168.1.2",
    ]


def test_deletions_are_sorted() -> None:
    d = want(RR, DesiredRealServer(rs("192.168.1.1"), present=False))
    o = have(RR, rs("192.168.1.1"), rs("192.168.1.2"))
    ops = plan(d, o)
    assert all(isinstance(op, DeleteRealServer) for op in ops)
    addresses = [op.key.address for op in ops if isinstance(op, DeleteRealServer)]
    assert addresses == sorted(addresses) == ["192.168.1.1", "192.168.1.2"]


def test_plan_is_deterministic_whatever_the_mapping_order() -> None:
    keys = [
        VirtualServerKey.for_address(Protocol.UDP, "10.0.0.2", 53),
        VirtualServerKey.for_fwmark(7),
        VirtualServerKey.for_address(Protocol.TCP, "2001:db8::1", 443),
        VS,
    ]
    addresses = ["192.168.1.3", "192.168.1.1", "192.168.1.2"]

    def build(order: list[int]) -> Desired:
        table: dict[VirtualServerKey, DesiredVirtualServer] = {}
        for i in order:
            key = keys[i]
            real = [
                rs(a if key.family == 4 else a.replace("192.168.1.", "2001:db8::"))
                for a in addresses
            ]
            items = real if i % 2 else real[::-1]
            table[key] = DesiredVirtualServer(
                VirtualServerSpec(key, "rr"), {r.key: DesiredRealServer(r) for r in items}
            )
        return table

    first = plan(build([0, 1, 2, 3]), {})
    assert plan(build([3, 1, 0, 2]), {}) == first
    assert plan(build([2, 3, 1, 0]), {}) == first
    # Each virtual server is followed by its own real servers.
    current: VirtualServerKey | None = None
    for op in first:
        if isinstance(op, AddVirtualServer):
            current = op.spec.key
        else:
            assert isinstance(op, AddRealServer)
            assert op.virtual_server == current


def test_teardown_deletes_only_configured_virtual_servers_that_exist() -> None:
    missing = VirtualServerKey.for_address(Protocol.UDP, "10.0.0.1", 53)
    d = {**want(RR, rs(A)), **want(VirtualServerSpec(missing, "rr"), rs(A))}
    o = {**have(RR, rs(A)), **have(VirtualServerSpec(OTHER, "rr"), rs(B))}
    ops = plan_teardown(d, o)
    assert ops == [DeleteVirtualServer(VS, reason=ops[0].reason)]
    assert plan_teardown(d, {}) == []


# ---- property: applying the plan converges, and never touches foreign virtual servers ----------

V4_KEYS = [
    VS,
    VirtualServerKey.for_address(Protocol.TCP, "10.0.0.2", 80),
    VirtualServerKey.for_address(Protocol.UDP, "10.0.0.1", 53),
    VirtualServerKey.for_fwmark(7),
]
V6_KEYS = [
    VirtualServerKey.for_address(Protocol.TCP, "2001:db8::1", 443),
    VirtualServerKey.for_fwmark(7, family=6),
]
ALL_KEYS = V4_KEYS + V6_KEYS
SCHEDULERS = ["rr", "wlc", "sh"]


def real_server_specs(key: VirtualServerKey) -> st.SearchStrategy[RealServerSpec]:
    pool = (
        ["192.168.1.1", "192.168.1.2", "192.168.1.3", "192.168.1.10"]
        if key.family == 4
        else ["2001:db8::a", "2001:db8::b", "2001:db8::c"]
    )
    return st.builds(
        RealServerSpec,
        key=st.builds(RealServerKey, st.sampled_from(pool), st.sampled_from([80, 8080])),
        forwarding=st.sampled_from(list(Forwarding)),
        weight=st.integers(0, 5),
        upper_threshold=st.sampled_from([0, 100]),
        lower_threshold=st.sampled_from([0, 10]),
    )


def vs_specs(key: VirtualServerKey) -> st.SearchStrategy[VirtualServerSpec]:
    return st.builds(
        VirtualServerSpec,
        key=st.just(key),
        scheduler=st.sampled_from(SCHEDULERS),
        persistence_timeout_s=st.sampled_from([0, 300]),
    )


@st.composite
def desired_tables(draw: st.DrawFn) -> Desired:
    keys = draw(st.lists(st.sampled_from(ALL_KEYS), unique=True, max_size=4))
    table: dict[VirtualServerKey, DesiredVirtualServer] = {}
    for key in keys:
        specs = draw(st.lists(real_server_specs(key), max_size=5, unique_by=lambda s: s.key))
        real_servers = {
            s.key: DesiredRealServer(
                s,
                why="test",
                adopt_weight=draw(st.booleans()),
                add_if_absent=draw(st.booleans()),
                present=draw(st.booleans()),
            )
            for s in specs
        }
        table[key] = DesiredVirtualServer(draw(vs_specs(key)), real_servers)
    return table


@st.composite
def kernels(draw: st.DrawFn) -> list[ObservedVirtualServer]:
    keys = draw(st.lists(st.sampled_from(ALL_KEYS), unique=True, max_size=5))
    out = []
    for key in keys:
        specs = draw(st.lists(real_server_specs(key), max_size=5, unique_by=lambda s: s.key))
        out.append(
            ObservedVirtualServer(
                draw(vs_specs(key)),
                {
                    s.key: ObservedRealServer(s, active_connections=draw(st.sampled_from([0, 3])))
                    for s in specs
                },
            )
        )
    return out


def _rs_specs(table: Observed, key: VirtualServerKey) -> Mapping[RealServerKey, RealServerSpec]:
    vs = table.get(key)
    return {} if vs is None else {k: r.spec for k, r in vs.real_servers.items()}


@settings(max_examples=200, deadline=None)
@given(wanted=desired_tables(), kernel=kernels())
def test_applying_the_plan_converges_and_leaves_foreign_virtual_servers_alone(
    wanted: Desired, kernel: list[ObservedVirtualServer]
) -> None:
    fake = FakeIpvs(kernel)
    before = fake.snapshot()
    foreign = [k for k in before if k not in wanted]
    foreign_before = fake.snapshot(foreign)

    ops = plan(wanted, before)  # the foreign ones are in ``observed`` too
    for op in ops:
        fake.apply_now(op)  # the kernel refuses nothing: the order is right

    after = fake.snapshot(wanted.keys())
    assert plan(wanted, after) == []
    assert fake.snapshot(foreign) == foreign_before

    for key, vs in wanted.items():
        assert after[key].spec == vs.spec
        had = _rs_specs(before, key)
        now = _rs_specs(after, key)
        expected = {
            rs_key: wanted_weight(d, had.get(rs_key)) for rs_key, d in vs.real_servers.items()
        }
        # Exactly the configured real servers that should be there, at the wanted weight...
        assert {k: s.weight for k, s in now.items()} == {
            k: w for k, w in expected.items() if w is not None
        }
        # ...with the configured forwarding and thresholds.
        for rs_key, spec in now.items():
            want_spec = vs.real_servers[rs_key].spec
            assert spec == replace(want_spec, weight=spec.weight)


@settings(max_examples=200, deadline=None)
@given(wanted=desired_tables(), kernel=kernels())
def test_the_table_expected_after_a_plan_is_the_one_the_kernel_holds(
    wanted: Desired, kernel: list[ObservedVirtualServer]
) -> None:
    fake = FakeIpvs(kernel)
    before = fake.snapshot()
    ops = plan(wanted, before)
    for op in ops:
        fake.apply_now(op)
    assert expected_after(before, ops) == fake.snapshot()


def test_expected_after_keeps_the_objects_it_does_not_touch() -> None:
    spec = VirtualServerSpec(VS, "rr")
    before = {
        **have(spec, rs(A), rs(B)),
        OTHER: ObservedVirtualServer(VirtualServerSpec(OTHER), {}),
    }
    after = expected_after(before, [EditRealServer(VS, rs(B, weight=0))])
    assert after[OTHER] is before[OTHER]
    assert (
        after[VS].real_servers[RealServerKey(A, 80)]
        is before[VS].real_servers[RealServerKey(A, 80)]
    )
    assert after[VS].real_servers[RealServerKey(B, 80)].spec.weight == 0
    assert before[VS].real_servers[RealServerKey(B, 80)].spec.weight == 1  # not mutated
    assert expected_after(before, []) is before


# ---- plan_changes: what changed since the last pass, against its snapshot --------------------


def test_plan_changes_plans_only_the_changed_real_servers_against_the_snapshot() -> None:
    spec = VirtualServerSpec(VS, "rr")
    before = want(spec, rs(A, weight=3), rs(B, weight=3))
    entry_a = before[VS].real_servers[RealServerKey(A, 80)]
    now = {
        VS: DesiredVirtualServer(
            spec,
            {
                RealServerKey(A, 80): entry_a,  # unchanged: the same object
                RealServerKey(B, 80): DesiredRealServer(rs(B, weight=0), why="web-2 down"),
            },
        )
    }
    # the snapshot disagrees on A too: that is for the pass's read and plan, not for this
    snapshot = have(spec, rs(A, weight=9), rs(B, weight=3))
    ops = plan_changes(before, now, snapshot)
    assert ops == [EditRealServer(VS, rs(B, weight=0), reason="weight 3 -> 0; web-2 down")]
    assert plan_changes(before, before, snapshot) == []


def test_plan_changes_adds_what_the_snapshot_lacks_and_deletes_what_must_go() -> None:
    spec = VirtualServerSpec(VS, "rr")
    before = want(spec, rs(A), rs(B))
    now = want(
        spec,
        DesiredRealServer(rs(A), why="web-1 up"),
        DesiredRealServer(rs(B), why="web-2 down", present=False),
    )
    ops = plan_changes(before, now, have(spec, rs(B)))  # A vanished by hand meanwhile
    assert ops == [
        DeleteRealServer(VS, RealServerKey(B, 80), reason="web-2 down"),
        AddRealServer(VS, rs(A), reason="missing from the kernel; web-1 up"),
    ]


def test_plan_changes_leaves_new_retiring_and_unread_virtual_servers_to_the_pass() -> None:
    spec, other = VirtualServerSpec(VS, "rr"), VirtualServerSpec(OTHER, "rr")
    before = want(spec, rs(A))
    now = {
        **want(spec, rs(A, weight=2), rs(B)),  # A changed; B is new to the config
        **want(other, rs(C)),  # a new virtual server
    }
    assert plan_changes(before, now, have(spec, rs(A))) == [
        EditRealServer(VS, rs(A, weight=2), reason="weight 1 -> 2; ")
    ]
    assert plan_changes(before, now, {}) == []  # not in the snapshot: the read decides
    retiring = {VS: DesiredVirtualServer(spec, {}, retire=True, why="removed")}
    assert plan_changes(before, retiring, have(spec, rs(A))) == []


@st.composite
def changed_tables(draw: st.DrawFn, before: Desired) -> Desired:
    """``before`` with some real servers' entries replaced (a verdict, an override)."""
    table = {}
    for key, vs in before.items():
        real_servers = {}
        for rs_key, entry in vs.real_servers.items():
            if draw(st.booleans()):
                entry = DesiredRealServer(
                    replace(entry.spec, weight=draw(st.integers(0, 5))),
                    why="changed",
                    adopt_weight=draw(st.booleans()),
                    add_if_absent=draw(st.booleans()),
                    present=draw(st.booleans()),
                )
            real_servers[rs_key] = entry
        table[key] = DesiredVirtualServer(vs.spec, real_servers)
    return table


@settings(max_examples=200, deadline=None)
@given(data=st.data(), before=desired_tables(), kernel=kernels())
def test_changes_applied_early_then_the_plan_end_where_the_plan_alone_ends(
    data: st.DataObject, before: Desired, kernel: list[ObservedVirtualServer]
) -> None:
    """A pass that applies ``plan_changes`` against its snapshot, then reads the kernel and
    applies ``plan``, leaves the kernel as a pass of ``plan`` alone would have."""
    fake = FakeIpvs(kernel)
    for op in plan(before, fake.snapshot()):  # the last pass: the kernel in line with before
        fake.apply_now(op)
    snapshot = fake.snapshot()
    now = data.draw(changed_tables(before))
    alone = FakeIpvs(list(snapshot.values()))
    for op in plan(now, alone.snapshot()):
        alone.apply_now(op)
    early = plan_changes(before, now, snapshot)
    changed = {
        (key, rs_key)
        for key, vs in now.items()
        for rs_key, entry in vs.real_servers.items()
        if before[key].real_servers[rs_key] is not entry
    }
    for op in early:
        assert isinstance(op, AddRealServer | EditRealServer | DeleteRealServer)
        rs_key = op.key if isinstance(op, DeleteRealServer) else op.spec.key
        assert (op.virtual_server, rs_key) in changed
        fake.apply_now(op)
    # every changed real server is already where the plan alone takes it
    early_table, final = fake.snapshot(), alone.snapshot()
    for key, rs_key in changed:
        if key in snapshot:
            assert early_table[key].real_servers.get(rs_key) == final[key].real_servers.get(rs_key)
    for op in plan(now, fake.snapshot()):
        fake.apply_now(op)
    assert fake.snapshot() == alone.snapshot()
