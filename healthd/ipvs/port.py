"""The narrow port between the reconciler and the kernel's IPVS table."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from healthd.model import Observed, Op, VirtualServerKey


class IpvsPort(Protocol):
    async def dump(self, keys: Collection[VirtualServerKey]) -> Observed:
        """The kernel's state of these virtual servers (absent ones are left out)."""

    async def apply(self, op: Op) -> None:
        """Carry out one operation; raises an ``IpvsError`` subclass on failure."""

    async def close(self) -> None: ...
