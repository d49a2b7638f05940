"""``plan(desired, observed) -> ops``: the diff between the wanted and the kernel's table.  Pure.

Ownership: only virtual servers in ``desired`` are looked at; anything else in the kernel is
never touched, and nothing is flushed.  Inside a virtual server healthd owns, real servers that
are not in the configuration are deleted (the configuration is the whole truth for it).

Order: a virtual server is added (or edited) before its real servers; within one, deletions come
first, then edits, then additions, each sorted, so plans are deterministic.  Attributes are
compared explicitly (weight, forwarding, thresholds, scheduler, persistence): a weight changed
behind healthd's back is repaired.  Applying the plan and planning again yields no operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

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
from healthd.steps import Steps, chunks, run_steps


def plan(desired: Desired, observed: Observed) -> list[Op]:
    return run_steps(plan_steps(desired, observed))


def plan_steps(desired: Desired, observed: Observed) -> Steps[list[Op]]:
    """``plan`` in steps: a generator that yields (nothing) every STEP_REAL_SERVERS real servers
    and returns the ops."""
    ops: list[Op] = []
    for key in sorted(desired, key=VirtualServerKey.sort_key):
        ops.extend((yield from _plan_virtual_server(desired[key], observed.get(key))))
    return ops


def plan_teardown(desired: Desired, observed: Observed) -> list[Op]:
    """Delete the configured virtual servers that exist (for ``on_stop: remove``)."""
    return [
        DeleteVirtualServer(key, reason="shutdown with on_stop: remove")
        for key in sorted(desired, key=VirtualServerKey.sort_key)
        if key in observed
    ]


def _vs_changes(want: VirtualServerSpec, have: VirtualServerSpec) -> list[str]:
    changes = []
    if want.scheduler != have.scheduler:
        changes.append(f"scheduler {have.scheduler} -> {want.scheduler}")
    if want.persistence_timeout_s != have.persistence_timeout_s:
        changes.append(
            f"persistence {have.persistence_timeout_s}s -> {want.persistence_timeout_s}s"
        )
    return changes


def _rs_changes(want: RealServerSpec, have: RealServerSpec) -> list[str]:
    changes = []
    if want.weight != have.weight:
        changes.append(f"weight {have.weight} -> {want.weight}")
    if want.forwarding != have.forwarding:
        changes.append(f"forwarding {have.forwarding.value} -> {want.forwarding.value}")
    if (want.upper_threshold, want.lower_threshold) != (have.upper_threshold, have.lower_threshold):
        changes.append("connection thresholds")
    return changes


def wanted_weight(want: DesiredRealServer, have: RealServerSpec | None) -> int | None:
    """The weight healthd wants in the kernel given what is there; None: wants it absent."""
    if not want.present or (want.drain_then_delete and have is None):
        return None
    if want.drain_then_delete:
        return 0
    if have is None:
        return want.spec.weight if want.add_if_absent else None
    return have.weight if want.adopt_weight else want.spec.weight


def _target_spec(want: DesiredRealServer, have: RealServerSpec) -> RealServerSpec:
    if want.adopt_weight:
        return RealServerSpec(
            want.spec.key,
            want.spec.forwarding,
            have.weight,
            want.spec.upper_threshold,
            want.spec.lower_threshold,
        )
    return want.spec


def _drains(key: VirtualServerKey) -> bool:
    """UDP has no connection end to wait for: its entries only time out, so it is cut at once."""
    return key.protocol is not Protocol.UDP


def _busy(seen: ObservedRealServer) -> bool:
    return seen.active_connections + seen.inactive_connections > 0


def _plan_leaving(key: VirtualServerKey, seen: ObservedRealServer, why: str) -> Op | None:
    """A real server that is leaving: weight 0 while connections remain, then deleted."""
    if _drains(key) and _busy(seen):
        if seen.spec.weight != 0:
            spec = RealServerSpec(
                seen.spec.key,
                seen.spec.forwarding,
                0,
                seen.spec.upper_threshold,
                seen.spec.lower_threshold,
            )
            return EditRealServer(key, spec, reason=f"weight {seen.spec.weight} -> 0; {why}")
        return None
    return DeleteRealServer(key, seen.spec.key, reason=f"{why}; no connections left")


def _plan_retiring(want: DesiredVirtualServer, have: ObservedVirtualServer | None) -> list[Op]:
    key = want.spec.key
    if have is None:
        return []
    ops: list[Op] = []
    for rs_key in sorted(have.real_servers, key=_key_order):
        op = _plan_leaving(key, have.real_servers[rs_key], f"virtual server {want.why}")
        if op is not None:
            ops.append(op)
    if not have.real_servers:
        ops.append(DeleteVirtualServer(key, reason=f"{want.why}; no real server left"))
    return ops


def _plan_real_server(
    key: VirtualServerKey, d: DesiredRealServer, seen: ObservedRealServer | None
) -> Op | None:
    """The op that brings one real server from ``seen`` (None: absent) to ``d``, if any."""
    if seen is None:
        if d.present and d.add_if_absent and not d.drain_then_delete:
            return AddRealServer(key, d.spec, reason=f"missing from the kernel; {d.why}")
        return None
    if d.drain_then_delete:
        return _plan_leaving(key, seen, d.why)
    if not d.present:
        return DeleteRealServer(key, d.spec.key, reason=d.why)
    target = _target_spec(d, seen.spec)
    rs_changes = _rs_changes(target, seen.spec)
    if rs_changes:
        return EditRealServer(key, target, reason=f"{', '.join(rs_changes)}; {d.why}")
    return None


def _bucket(op: Op, deletes: list[Op], edits: list[Op], adds: list[Op]) -> list[Op]:
    if isinstance(op, DeleteRealServer):
        return deletes
    return adds if isinstance(op, AddRealServer) else edits


def plan_changes(before: Desired, desired: Desired, observed: Observed) -> list[Op]:
    """The ops for what changed in ``desired`` since ``before``, planned against ``observed``.

    For the start of a reconcile pass: ``before`` is the table the last pass brought the kernel
    in line with, ``observed`` the kernel as that pass left it.  Only real servers that were in
    ``before`` and whose entry changed (a verdict, an override, their config) are planned, in
    virtual servers the kernel had: what a health change needs, in proportion to the change.
    The pass then reads the kernel and plans everything (``plan``), which also repairs whatever
    the kernel held that the snapshot did not.  Same order as ``plan``.
    """
    ops: list[Op] = []
    for key in sorted(desired, key=VirtualServerKey.sort_key):
        want, was, have = desired[key], before.get(key), observed.get(key)
        if want is was or was is None or have is None or want.retire or was.retire:
            continue
        if want.real_servers is was.real_servers:
            continue
        deletes: list[Op] = []
        edits: list[Op] = []
        adds: list[Op] = []
        was_rs, seen_rs = was.real_servers, have.real_servers
        for rs_key, d in want.real_servers.items():
            previous = was_rs.get(rs_key)
            if previous is d or previous is None:
                continue
            op = _plan_real_server(key, d, seen_rs.get(rs_key))
            if op is not None:
                _bucket(op, deletes, edits, adds).append(op)
        ops += _sorted(deletes) + _sorted(edits) + _sorted(adds)
    return ops


def _plan_virtual_server(
    want: DesiredVirtualServer, have: ObservedVirtualServer | None
) -> Steps[list[Op]]:
    """The virtual server's ops; real servers are walked in table order (no sort of thousands
    per pass) and only the ops are sorted."""
    if want.retire:
        return _plan_retiring(want, have)
    key = want.spec.key
    if have is None:
        adds: list[Op] = []
        for chunk in chunks(list(want.real_servers.values())):
            adds.extend(
                AddRealServer(key, d.spec, reason=d.why)
                for d in chunk
                if d.present and d.add_if_absent and not d.drain_then_delete
            )
            yield
        return [AddVirtualServer(want.spec, reason="missing from the kernel"), *_sorted(adds)]
    ops: list[Op] = []
    changes = _vs_changes(want.spec, have.spec)
    if changes:
        ops.append(EditVirtualServer(want.spec, reason=", ".join(changes)))
    deletes: list[Op] = []
    edits: list[Op] = []
    adds = []
    seen_rs = have.real_servers
    matched = 0  # kernel entries that are wanted
    for chunk in chunks(list(want.real_servers.values())):
        for d in chunk:
            seen = seen_rs.get(d.spec.key)
            if seen is not None:
                matched += 1
                if (
                    d.present
                    and not (d.drain_then_delete or d.adopt_weight)
                    and seen.spec == d.spec
                ):
                    continue  # the common case, as wanted: one compare
            op = _plan_real_server(key, d, seen)
            if op is not None:
                _bucket(op, deletes, edits, adds).append(op)
        yield
    if matched < len(seen_rs):  # the kernel has real servers the config does not
        wanted_rs = want.real_servers
        for keys in chunks(list(seen_rs)):
            deletes.extend(
                DeleteRealServer(key, rs_key, reason="not in the configuration")
                for rs_key in keys
                if rs_key not in wanted_rs
            )
            yield
    return ops + _sorted(deletes) + _sorted(edits) + _sorted(adds)


def _sorted(ops: list[Op]) -> list[Op]:
    """Real-server ops by real server (address, port)."""
    return sorted(ops, key=_op_order)


def _op_order(op: Op) -> tuple[str, int]:
    if isinstance(op, DeleteRealServer):
        return _key_order(op.key)
    if isinstance(op, AddRealServer | EditRealServer):
        return _key_order(op.spec.key)
    return ("", 0)


def _key_order(key: RealServerKey) -> tuple[str, int]:
    return (key.address, key.port)


def expected_after(observed: Observed, ops: Sequence[Op]) -> Observed:
    """The table ``observed`` becomes once every op of ``ops`` was applied as asked.

    What the kernel acknowledged, without reading it back: a pass whose every request succeeded
    keeps its snapshot true (for metrics and status) at no second dump.  Counters of what was
    edited stay as last read; what was added starts at zero, as the kernel's do.  Entries the ops
    do not touch keep their objects.
    """
    if not ops:
        return observed
    table = dict(observed)
    changed: dict[VirtualServerKey, dict[RealServerKey, ObservedRealServer]] = {}

    def real_servers(key: VirtualServerKey) -> dict[RealServerKey, ObservedRealServer]:
        if key not in changed:
            changed[key] = dict(table[key].real_servers)
        return changed[key]

    for op in ops:
        if isinstance(op, AddVirtualServer):
            table[op.spec.key] = ObservedVirtualServer(op.spec, {})
            changed[op.spec.key] = {}
        elif isinstance(op, EditVirtualServer):
            table[op.spec.key] = replace(table[op.spec.key], spec=op.spec)
        elif isinstance(op, DeleteVirtualServer):
            del table[op.key]
            changed.pop(op.key, None)
        elif isinstance(op, AddRealServer):
            real_servers(op.virtual_server)[op.spec.key] = ObservedRealServer(op.spec)
        elif isinstance(op, EditRealServer):
            rs = real_servers(op.virtual_server)
            rs[op.spec.key] = replace(rs[op.spec.key], spec=op.spec)
        else:
            del real_servers(op.virtual_server)[op.key]
    for key, rs in changed.items():
        table[key] = replace(table[key], real_servers=rs)
    return table
