"""``--dry-run``: a shadow table seeded from the kernel (when it has IPVS), never written to it.

The reconciler logs each operation one per line ("dry-run: would ..."); they are applied to the
shadow, so each would-be change is reported once, as the live daemon would make it once.
"""

from __future__ import annotations

from collections.abc import Collection

from healthd.ipvs.fake import FakeIpvs
from healthd.ipvs.port import IpvsPort
from healthd.model import Desired, Observed, Op, VirtualServerKey


class DryRunIpvs:
    def __init__(self, seed: Observed | None = None) -> None:
        self._shadow = FakeIpvs((seed or {}).values())

    @classmethod
    async def seeded_from(
        cls, kernel: IpvsPort | None, keys: Collection[VirtualServerKey]
    ) -> DryRunIpvs:
        if kernel is None:
            return cls()
        try:
            return cls(await kernel.dump(keys))
        finally:
            await kernel.close()

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        return await self._shadow.dump(keys, like)

    async def apply(self, op: Op) -> None:
        await self._shadow.apply(op)

    async def close(self) -> None:
        return None
