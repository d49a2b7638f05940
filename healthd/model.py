"""The nouns healthd moves between its parts: frozen values, no I/O.

Vocabulary: users say *virtual server* and *real server*; netlink's service/dest names stay inside
``healthd.ipvs.netlink``.  Identity is kept apart from attributes: a ``VirtualServerKey`` names a
virtual server as the kernel knows it, a ``VirtualServerSpec`` is what it should look like.

Data flow::

    Config --> scheduler --> probes --ProbeResult--> health.step --> policy.desired --Desired-->
    plan(desired, observed) --Ops--> IpvsPort.apply --> kernel;  IpvsPort.dump --> Observed
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, TypeVar


class Protocol(enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class Forwarding(enum.Enum):
    """How IPVS forwards to a real server (ipvsadm -m / -g / -i)."""

    NAT = "nat"
    DR = "dr"
    TUNNEL = "tunnel"

    @property
    def ipvsadm_name(self) -> str:
        return {"nat": "Masq", "dr": "Route", "tunnel": "Tunnel"}[self.value]


class OnFailure(enum.Enum):
    INHIBIT = "inhibit"  # weight 0: existing connections drain, no new ones
    REMOVE = "remove"  # delete the destination


class Health(enum.Enum):
    UNKNOWN = "unknown"  # no verdict yet
    UP = "up"
    DOWN = "down"


def normalize_address(text: str) -> str:
    """Canonical text form of an IPv4/IPv6 address (raises ValueError)."""
    return str(ipaddress.ip_address(text))


def address_family(address: str) -> int:
    return ipaddress.ip_address(address).version


def format_endpoint(address: str, port: int) -> str:
    if ":" in address:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


@dataclass(frozen=True, slots=True, order=True)
class VirtualServerKey:
    """A virtual server's identity in the kernel: (protocol, address, port) or (family, fwmark)."""

    family: int  # 4 or 6
    protocol: Protocol | None  # None for fwmark virtual servers
    address: str  # "" for fwmark virtual servers
    port: int  # 0 for fwmark virtual servers
    fwmark: int = 0

    @classmethod
    def for_address(cls, protocol: Protocol, address: str, port: int) -> VirtualServerKey:
        address = normalize_address(address)
        return cls(address_family(address), protocol, address, port, 0)

    @classmethod
    def for_fwmark(cls, fwmark: int, family: int = 4) -> VirtualServerKey:
        return cls(family, None, "", 0, fwmark)

    def __str__(self) -> str:
        if self.fwmark:
            return f"FWM {self.fwmark}" + (" IPv6" if self.family == 6 else "")
        assert self.protocol is not None
        return f"{self.protocol.value.upper()} {format_endpoint(self.address, self.port)}"

    def sort_key(self) -> tuple[int, str, str, int, int]:
        proto = self.protocol.value if self.protocol else ""
        return (self.family, proto, self.address, self.port, self.fwmark)


class RealServerKey(NamedTuple):
    """A real server inside one virtual server.

    A named tuple, not a dataclass like the other values: it is the key of every per-real-server
    dict (the desired table, the kernel's, the plan's walk over both), and a tuple's hash and
    equality run in C.  A dataclass's are Python functions: at 5 000 real servers they were a
    seventh of the daemon's CPU while a dead backend's pass ran in the test VM.
    """

    address: str
    port: int

    def __str__(self) -> str:
        return format_endpoint(self.address, self.port)


@dataclass(frozen=True, slots=True)
class VirtualServerSpec:
    """The attributes healthd sets on a virtual server."""

    key: VirtualServerKey
    scheduler: str = "wlc"
    persistence_timeout_s: int = 0  # 0: not persistent

    def describe(self) -> str:
        text = f"{self.key} scheduler {self.scheduler}"
        if self.persistence_timeout_s:
            text += f" persistent {self.persistence_timeout_s}"
        return text


@dataclass(frozen=True, slots=True)
class RealServerSpec:
    """The attributes healthd sets on a real server (always complete: see ipvs-vm.md section 3)."""

    key: RealServerKey
    forwarding: Forwarding
    weight: int
    upper_threshold: int = 0
    lower_threshold: int = 0

    def describe(self) -> str:
        return f"{self.key} {self.forwarding.value} weight {self.weight}"


@dataclass(frozen=True, slots=True)
class TrafficStats:
    """The kernel's 64-bit counters and 2 s estimator rates for a virtual or real server."""

    connections: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    cps: int = 0
    packets_in_per_s: int = 0
    packets_out_per_s: int = 0
    bytes_in_per_s: int = 0
    bytes_out_per_s: int = 0


# No traffic yet (or none through this director): one object for every such real server.
NO_TRAFFIC = TrafficStats()


def traffic(values: list[int]) -> TrafficStats:
    """The stats of the counters in TrafficStats's field order; ``NO_TRAFFIC`` when all are 0."""
    return TrafficStats(*values) if any(values) else NO_TRAFFIC


@dataclass(frozen=True, slots=True)
class ObservedRealServer:
    spec: RealServerSpec
    active_connections: int = 0
    inactive_connections: int = 0
    persistent_connections: int = 0
    stats: TrafficStats = NO_TRAFFIC


@dataclass(frozen=True, slots=True)
class ObservedVirtualServer:
    spec: VirtualServerSpec
    real_servers: Mapping[RealServerKey, ObservedRealServer]
    stats: TrafficStats = NO_TRAFFIC


# What the kernel holds, for the virtual servers that were asked about.
Observed = Mapping[VirtualServerKey, ObservedVirtualServer]

_T = TypeVar("_T")


def same_or_new(previous: _T | None, new: _T) -> _T:
    """``previous`` if it equals ``new``: values that did not change keep their object.

    The desired table, rebuilt when health changes, then keeps the objects of the real servers
    that did not change, and the new copies die young (the kernel's table keeps its objects in
    the dump itself, ``ipvs/dumps.py``): at thousands of real
    servers, objects that live from one pass to the next and then die are what makes the garbage
    collector's full passes frequent and long (tens of ms, with probes waiting).
    """
    if previous is None or previous is new:
        return new
    return previous if previous == new else new


@dataclass(frozen=True, slots=True)
class DesiredRealServer:
    """What one real server should look like in the kernel, and why.

    ``adopt_weight``: no verdict yet; if the kernel already has this real server, keep its weight
    (a restart must not make a healthy pool flap).  ``add_if_absent``: when False and the kernel
    lacks it, leave it absent (remove mode with no verdict yet).  ``present``: False when it must
    not be in the kernel (down, remove mode); ``why`` then says why it is deleted.
    """

    spec: RealServerSpec
    why: str = ""
    adopt_weight: bool = False
    add_if_absent: bool = True
    present: bool = True
    # Leaving (removed from the config, inhibit mode): weight 0 until the kernel counts no
    # connection to it, then deleted; never added.
    drain_then_delete: bool = False


@dataclass(frozen=True, slots=True)
class DesiredVirtualServer:
    spec: VirtualServerSpec
    real_servers: Mapping[RealServerKey, DesiredRealServer]
    # Removed from the config: its real servers drain and are deleted, then it is deleted.
    retire: bool = False
    why: str = ""


Desired = Mapping[VirtualServerKey, DesiredVirtualServer]


# ---- Operations: what plan() asks the adapter to do, one kernel request each ----------------


@dataclass(frozen=True, slots=True)
class AddVirtualServer:
    spec: VirtualServerSpec
    reason: str = ""

    def __str__(self) -> str:
        return f"add virtual server {self.spec.describe()}"


@dataclass(frozen=True, slots=True)
class EditVirtualServer:
    spec: VirtualServerSpec
    reason: str = ""

    def __str__(self) -> str:
        return f"edit virtual server {self.spec.describe()}"


@dataclass(frozen=True, slots=True)
class DeleteVirtualServer:
    key: VirtualServerKey
    reason: str = ""

    def __str__(self) -> str:
        return f"delete virtual server {self.key}"


@dataclass(frozen=True, slots=True)
class AddRealServer:
    virtual_server: VirtualServerKey
    spec: RealServerSpec
    reason: str = ""

    def __str__(self) -> str:
        return f"add real server {self.virtual_server} -> {self.spec.describe()}"


@dataclass(frozen=True, slots=True)
class EditRealServer:
    virtual_server: VirtualServerKey
    spec: RealServerSpec
    reason: str = ""

    def __str__(self) -> str:
        return f"edit real server {self.virtual_server} -> {self.spec.describe()}"


@dataclass(frozen=True, slots=True)
class DeleteRealServer:
    virtual_server: VirtualServerKey
    key: RealServerKey
    reason: str = ""

    def __str__(self) -> str:
        return f"delete real server {self.virtual_server} -> {self.key}"


Op = (
    AddVirtualServer
    | EditVirtualServer
    | DeleteVirtualServer
    | AddRealServer
    | EditRealServer
    | DeleteRealServer
)
