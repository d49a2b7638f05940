"""Operator overrides (drain, maintenance, weight) and what an operator sees.  Pure.

    override   kernel weight                        shown as
    drain      0 (existing connections continue)    draining, then drained once the kernel
                                                    counts no active or inactive connection
    maint      0, whatever the checks say           maintenance
    weight N   N instead of the configured weight,  the health state
               while the checks say up
    (none)     health-driven (see policy.py)        up / down / unknown

``ready`` removes the override.  An override may expire (``expires_at``); the shell drops
expired ones with the clock and the policy never sees them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from healthd.model import Health, ObservedRealServer

RealServerId = tuple[str, str]  # (virtual server name, real server name)


class OverrideKind(enum.Enum):
    DRAIN = "drain"
    MAINT = "maint"
    WEIGHT = "weight"


@dataclass(frozen=True, slots=True)
class Override:
    kind: OverrideKind
    owner: str
    reason: str = ""
    created_at: float = 0.0  # unix time
    expires_at: float | None = None  # unix time; None: until `healthd ready`
    weight: int | None = None  # for WEIGHT

    def describe(self, now: float | None = None) -> str:
        what = f"weight {self.weight}" if self.kind is OverrideKind.WEIGHT else self.kind.value
        text = f"{what} by {self.owner}"
        if self.reason:
            text += f": {self.reason}"
        if self.expires_at is not None:
            if now is None:
                text += f" (expires at {self.expires_at:.0f})"
            else:
                text += f" (expires in {max(0, round(self.expires_at - now))}s)"
        return text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Override:
        return cls(
            kind=OverrideKind(data["kind"]),
            owner=str(data.get("owner", "")),
            reason=str(data.get("reason", "")),
            created_at=float(data.get("created_at", 0.0)),
            expires_at=None if data.get("expires_at") is None else float(data["expires_at"]),
            weight=None if data.get("weight") is None else int(data["weight"]),
        )


def unexpired(
    overrides: Mapping[RealServerId, Override], now: float
) -> dict[RealServerId, Override]:
    return {rs: o for rs, o in overrides.items() if o.expires_at is None or o.expires_at > now}


def next_expiry(overrides: Mapping[RealServerId, Override]) -> float | None:
    times = [o.expires_at for o in overrides.values() if o.expires_at is not None]
    return min(times) if times else None


def shown_state(
    health: Health, override: Override | None, observed: ObservedRealServer | None
) -> str:
    """The state an operator sees: one of policy.REAL_SERVER_STATES."""
    if override is not None:
        if override.kind is OverrideKind.MAINT:
            return "maintenance"
        if override.kind is OverrideKind.DRAIN:
            busy = observed is not None and (
                observed.active_connections + observed.inactive_connections > 0
            )
            return "draining" if busy else "drained"
    return health.value
