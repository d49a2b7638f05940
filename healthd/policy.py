"""Pool policy: configuration + health -> the desired IPVS table.  Pure.

Per real server (``on_failure`` is the virtual server's):

    health    inhibit                              remove
    UP        present, configured weight           present, configured weight
    DOWN      present, weight 0 (connections       absent (deleted)
              drain, no new ones)
    UNKNOWN   present; if the kernel already has   if the kernel already has it, keep it and
              it, keep its weight, else add it     its weight; else leave it absent
              with weight 0

UNKNOWN means no verdict yet: a restarted daemon adopts the kernel's table and changes nothing
until the checks have spoken, so a healthy pool never flaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from healthd.config.types import Config, RealServerConfig, VirtualServerConfig
from healthd.model import (
    Desired,
    DesiredRealServer,
    DesiredVirtualServer,
    Health,
    OnFailure,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
    same_or_new,
)
from healthd.overrides import Override, OverrideKind


@dataclass(frozen=True, slots=True)
class RealServerStatus:
    health: Health
    why: str = ""  # the detail of the probe that decided, e.g. "HTTP GET ...: status 503"


UNKNOWN = RealServerStatus(Health.UNKNOWN, "no verdict yet")

# What an operator sees for a real server (status, metrics): health, or an operator override.
REAL_SERVER_STATES = ("up", "down", "unknown", "draining", "drained", "maintenance")

# (virtual server name, real server name) -> status
StatusMap = Mapping[tuple[str, str], RealServerStatus]


def desired_real_server(
    vs: VirtualServerConfig,
    rs: RealServerConfig,
    status: RealServerStatus,
    override: Override | None = None,
) -> DesiredRealServer:
    """The desired kernel state of one real server (overrides: see overrides.py)."""
    if override is not None and override.kind in (OverrideKind.DRAIN, OverrideKind.MAINT):
        return DesiredRealServer(
            rs.spec(weight=0), why=f"{vs.name}/{rs.name} {override.describe()}"
        )
    weight = rs.weight
    if (
        override is not None
        and override.kind is OverrideKind.WEIGHT
        and override.weight is not None
    ):
        weight = override.weight
    label = f"{vs.name}/{rs.name} {status.health.value}"
    why = f"{label}: {status.why}" if status.why else label
    if override is not None:
        why += f"; {override.describe()}"
    inhibit = vs.on_failure is OnFailure.INHIBIT
    if status.health is Health.UP:
        return DesiredRealServer(rs.spec(weight), why=why)
    if status.health is Health.DOWN:
        if inhibit:
            return DesiredRealServer(rs.spec(weight=0), why=why)
        return DesiredRealServer(rs.spec(weight), why=why, present=False)
    if inhibit:
        return DesiredRealServer(rs.spec(weight=0), why=why, adopt_weight=True)
    return DesiredRealServer(rs.spec(weight), why=why, adopt_weight=True, add_if_absent=False)


@dataclass(frozen=True, slots=True)
class Retiring:
    """What a reload removed and healthd still owns until it has left the kernel.

    ``virtual_servers``: removed whole (drained, then deleted).  ``real_servers``: removed from a
    virtual server that stays, in inhibit mode (drained, then deleted).
    """

    virtual_servers: Mapping[VirtualServerKey, VirtualServerSpec] = field(default_factory=dict)
    real_servers: Mapping[VirtualServerKey, Mapping[RealServerKey, RealServerSpec]] = field(
        default_factory=dict
    )


@dataclass(frozen=True, slots=True)
class Basis:
    """What a desired table was computed from: the config, and a copy of the statuses and the
    overrides in force.  The next table reuses a real server's entry, without computing it
    again, when its config, status and override are the very same objects as then (statuses
    are interned: ``state._status``); a health change then costs a pass in proportion to what
    changed, not to every real server (at 5 000 real servers in the test VM, rebuilding every
    entry was a third of the daemon's CPU while a backend's failure waited for its pass)."""

    config: Config
    status: StatusMap
    overrides: Mapping[tuple[str, str], Override]


def desired(
    config: Config,
    status: StatusMap,
    overrides: Mapping[tuple[str, str], Override] | None = None,
    retiring: Retiring | None = None,
    previous: Desired | None = None,
    basis: Basis | None = None,
) -> Desired:
    """The desired table: every virtual server in the config, and what a reload is retiring.

    ``previous``: the table of the last pass; what did not change keeps its object there
    (``model.same_or_new``).  ``basis``: what ``previous`` was computed from (see ``Basis``).
    """
    overrides = overrides or {}
    previous = previous or {}
    reuse = basis is not None and basis.config is config
    was_status = basis.status if basis is not None else {}
    was_override = basis.overrides if basis is not None else {}
    table: dict[VirtualServerKey, DesiredVirtualServer] = {}
    for vs in config.virtual_servers:
        real_servers: dict[RealServerKey, DesiredRealServer] = {}
        before = previous.get(vs.key)
        before_rs = before.real_servers if before is not None else {}
        for rs in vs.real_servers:
            rs_id = (vs.name, rs.name)
            st = status.get(rs_id, UNKNOWN)
            override = overrides.get(rs_id)
            was = before_rs.get(rs.key)
            if (
                reuse
                and was is not None
                and was_status.get(rs_id) is st
                and was_override.get(rs_id) is override
            ):
                real_servers[rs.key] = was
                continue
            real_servers[rs.key] = same_or_new(was, desired_real_server(vs, rs, st, override))
        if retiring is not None:
            for rs_key, rs_spec in retiring.real_servers.get(vs.key, {}).items():
                if rs_key not in real_servers:
                    real_servers[rs_key] = DesiredRealServer(
                        replace(rs_spec, weight=0),
                        why="removed from the configuration: draining",
                        drain_then_delete=True,
                    )
        table[vs.key] = same_or_new(before, DesiredVirtualServer(vs.spec, real_servers))
    if retiring is not None:
        for key, spec in retiring.virtual_servers.items():
            if key not in table:
                table[key] = DesiredVirtualServer(
                    spec, {}, retire=True, why="removed from the configuration"
                )
    return table


def patched(
    previous: Desired,
    status: StatusMap,
    overrides: Mapping[tuple[str, str], Override],
    changed: Iterable[tuple[str, str]],
    servers: Mapping[tuple[str, str], tuple[VirtualServerConfig, RealServerConfig]],
) -> Desired:
    """``previous`` with the entries of the ``changed`` real servers computed again.

    The same table ``desired`` would give, when ``previous`` was computed from the same config,
    these overrides and what is being retired, and only the statuses of ``changed`` differ
    since.  ``servers``: each real server's configuration, by name.  A verdict then costs a pass
    in proportion to it, not a walk over every real server.  Objects are kept as in
    ``desired``: an entry that comes out equal is the previous one.
    """
    table = dict(previous)
    real_servers: dict[VirtualServerKey, dict[RealServerKey, DesiredRealServer]] = {}
    for rs_id in changed:
        vs, rs = servers[rs_id]
        before = previous[vs.key]
        entry = before.real_servers[rs.key]
        new = same_or_new(
            entry, desired_real_server(vs, rs, status.get(rs_id, UNKNOWN), overrides.get(rs_id))
        )
        if new is entry:
            continue
        if vs.key not in real_servers:
            real_servers[vs.key] = dict(before.real_servers)
        real_servers[vs.key][rs.key] = new
    for key, entries in real_servers.items():
        table[key] = replace(previous[key], real_servers=entries)
    return table
