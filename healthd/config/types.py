"""The validated, immutable configuration."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from healthd.checkspec import CheckSpec, CheckTiming, Target
from healthd.model import (
    Forwarding,
    OnFailure,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
)

SCHEDULERS = frozenset(
    {"rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "sed", "nq", "fo", "ovf", "lblc", "lblcr", "twos"}
)


class OnStop(enum.Enum):
    KEEP = "keep"  # leave the table as it is (default): a restart does not disturb traffic
    REMOVE = "remove"  # delete the virtual servers the config describes


@dataclass(frozen=True, slots=True)
class CheckConfig:
    name: str
    spec: CheckSpec
    timing: CheckTiming


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Commands run (no shell, with a timeout) when a real server or a pool goes up or down."""

    up: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class RealServerConfig:
    name: str
    address: str
    port: int
    weight: int
    forwarding: Forwarding
    checks: tuple[CheckConfig, ...]
    notify: NotifyConfig | None = None
    # Built once: every reconcile pass asks for them, for every real server.
    key: RealServerKey = field(init=False, repr=False, compare=False)
    _spec: RealServerSpec = field(init=False, repr=False, compare=False)
    _spec_weight_0: RealServerSpec | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = RealServerKey(self.address, self.port)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "_spec", RealServerSpec(key, self.forwarding, self.weight))
        object.__setattr__(self, "_spec_weight_0", None)  # on first use: most never need it

    def spec(self, weight: int | None = None) -> RealServerSpec:
        if weight is None or weight == self.weight:
            return self._spec
        if weight == 0:
            if self._spec_weight_0 is None:
                zero = RealServerSpec(self.key, self.forwarding, 0)
                object.__setattr__(self, "_spec_weight_0", zero)
                return zero
            return self._spec_weight_0
        return RealServerSpec(key=self.key, forwarding=self.forwarding, weight=weight)


@dataclass(frozen=True, slots=True)
class VirtualServerConfig:
    name: str
    spec: VirtualServerSpec
    on_failure: OnFailure
    real_servers: tuple[RealServerConfig, ...]
    notify_pool: NotifyConfig | None = None  # the pool has no up real server / has one again
    # (virtual server, real server) names of each real server, built once and shared by the
    # health book, the metrics and the runtime's index rather than a tuple each per real server
    rs_ids: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = tuple((self.name, rs.name) for rs in self.real_servers)
        object.__setattr__(self, "rs_ids", ids)

    @property
    def key(self) -> VirtualServerKey:
        return self.spec.key

    def target(self, real_server: RealServerConfig) -> Target:
        key = self.spec.key
        return Target(
            address=real_server.address,
            port=real_server.port,
            vs_address=key.address,
            vs_port=key.port,
            vs_protocol=key.protocol.value if key.protocol else "",
            vs_fwmark=key.fwmark,
        )


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    interval_s: float = 5.0  # periodic pass: repairs hand edits within this time
    min_interval_s: float = 0.05  # passes triggered by health changes are at most this frequent
    on_stop: OnStop = OnStop.KEEP
    # The IPVS netlink adapter: pyroute2 (default), or "raw", healthd's own generic netlink
    # codec (healthd/ipvs/genl_codec.py) at a fraction of pyroute2's CPU for large tables.
    netlink: str = "pyroute2"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 9540
    enabled: bool = True
    # healthd_check_duration_seconds: one histogram per (virtual server, real server, check),
    # one per (virtual server, check), or none; read at start (buckets are fixed at start too)
    check_duration: str = "per_real_server"


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The control API: a root-only unix socket, and optionally TCP with a bearer token."""

    socket: str = "/run/healthd/healthd.sock"
    enabled: bool = True
    listen_host: str | None = None
    listen_port: int = 0
    token_file: str | None = None


@dataclass(frozen=True, slots=True)
class ScriptsConfig:
    user: str | None = "nobody"  # script checks and notify commands run as this user (when root)
    insecure: bool = False  # allow scripts (or their directories) writable by non-root users


@dataclass(frozen=True, slots=True)
class EventsConfig:
    file: str | None = None  # JSON lines: a path, "-" for stdout, None for off


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    virtual_servers: tuple[VirtualServerConfig, ...]
    metrics: MetricsConfig = MetricsConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    max_concurrent_probes: int = 1024
    # probes.workers: "auto" = in the daemon's process until it is busy (healthd/autoworkers.py),
    # 0 = always there, N = in N worker processes (healthd/workers.py)
    probe_workers: int | Literal["auto"] = "auto"
    # probes.engine_threads: the C engine's checks run in that many threads (0: on the event
    # loop); "auto": on the loop until probes.workers: auto's first move, which may go there
    probe_engine_threads: int | Literal["auto"] = "auto"
    control: ControlConfig = ControlConfig()
    state_file: str = "/var/lib/healthd/state.json"
    scripts: ScriptsConfig = ScriptsConfig()
    events: EventsConfig = EventsConfig()
