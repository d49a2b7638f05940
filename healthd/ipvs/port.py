"""The narrow port between the reconciler and the kernel's IPVS table."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from healthd.model import Desired, Observed, Op, VirtualServerKey


class IpvsPort(Protocol):
    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        """The kernel's state of these virtual servers (absent ones are left out).

        ``like``: the desired table, if at hand: a real server read back as it is there may
        share its objects (one copy of each key and spec instead of two; the values are the
        kernel's either way)."""

    async def apply(self, op: Op) -> None:
        """Carry out one operation; raises an ``IpvsError`` subclass on failure."""

    async def close(self) -> None: ...
