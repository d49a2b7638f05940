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

from collections.abc import Mapping
from dataclasses import dataclass

from healthd.config.types import Config, RealServerConfig, VirtualServerConfig
from healthd.model import (
    Desired,
    DesiredRealServer,
    DesiredVirtualServer,
    Health,
    OnFailure,
    RealServerKey,
    VirtualServerKey,
)


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
    vs: VirtualServerConfig, rs: RealServerConfig, status: RealServerStatus
) -> DesiredRealServer:
    """The desired kernel state of one real server."""
    label = f"{vs.name}/{rs.name} {status.health.value}"
    why = f"{label}: {status.why}" if status.why else label
    inhibit = vs.on_failure is OnFailure.INHIBIT
    if status.health is Health.UP:
        return DesiredRealServer(rs.spec(), why=why)
    if status.health is Health.DOWN:
        if inhibit:
            return DesiredRealServer(rs.spec(weight=0), why=why)
        return DesiredRealServer(rs.spec(), why=why, present=False)
    if inhibit:
        return DesiredRealServer(rs.spec(weight=0), why=why, adopt_weight=True)
    return DesiredRealServer(rs.spec(), why=why, adopt_weight=True, add_if_absent=False)


def desired(config: Config, status: StatusMap) -> Desired:
    """The desired table for every virtual server in the config."""
    table: dict[VirtualServerKey, DesiredVirtualServer] = {}
    for vs in config.virtual_servers:
        real_servers: dict[RealServerKey, DesiredRealServer] = {
            rs.key: desired_real_server(vs, rs, status.get((vs.name, rs.name), UNKNOWN))
            for rs in vs.real_servers
        }
        table[vs.key] = DesiredVirtualServer(vs.spec, real_servers)
    return table
