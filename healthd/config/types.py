"""The validated, immutable configuration."""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
class RealServerConfig:
    name: str
    address: str
    port: int
    weight: int
    forwarding: Forwarding
    checks: tuple[CheckConfig, ...]

    @property
    def key(self) -> RealServerKey:
        return RealServerKey(self.address, self.port)

    def spec(self, weight: int | None = None) -> RealServerSpec:
        return RealServerSpec(
            key=self.key,
            forwarding=self.forwarding,
            weight=self.weight if weight is None else weight,
        )


@dataclass(frozen=True, slots=True)
class VirtualServerConfig:
    name: str
    spec: VirtualServerSpec
    on_failure: OnFailure
    real_servers: tuple[RealServerConfig, ...]

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


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 9540
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    virtual_servers: tuple[VirtualServerConfig, ...]
    metrics: MetricsConfig = MetricsConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    max_concurrent_probes: int = 1024
