"""An in-memory IPVS table that refuses what the kernel refuses.  For tests and ``--dry-run``.

Never the proof of kernel behaviour: the VM test bed is (tests/kernel).
"""

from __future__ import annotations

import errno
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace

from healthd.config.types import SCHEDULERS
from healthd.ipvs.errors import from_errno
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    Desired,
    EditRealServer,
    EditVirtualServer,
    Forwarding,
    Observed,
    ObservedRealServer,
    ObservedVirtualServer,
    Op,
    RealServerKey,
    VirtualServerKey,
    address_family,
)


@dataclass
class _Entry:
    observed: ObservedVirtualServer
    real_servers: dict[RealServerKey, ObservedRealServer] = field(default_factory=dict)


class FakeIpvs:
    """Behaves like the kernel for the requests healthd makes; counts them in ``applied``."""

    def __init__(self, initial: Iterable[ObservedVirtualServer] = ()) -> None:
        self._table: dict[VirtualServerKey, _Entry] = {}
        self.applied: list[Op] = []
        self.dumps = 0
        for vs in initial:
            self._table[vs.spec.key] = _Entry(vs, dict(vs.real_servers))

    # ---- IpvsPort --------------------------------------------------------------------------

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        self.dumps += 1
        return self.snapshot(keys)

    async def apply(self, op: Op) -> None:
        self.apply_now(op)

    async def close(self) -> None:
        return None

    # ---- synchronous helpers (tests, hand edits) ------------------------------------------

    def snapshot(self, keys: Collection[VirtualServerKey] | None = None) -> Observed:
        wanted = self._table.keys() if keys is None else keys
        return {
            key: replace(
                self._table[key].observed, real_servers=dict(self._table[key].real_servers)
            )
            for key in wanted
            if key in self._table
        }

    def apply_now(self, op: Op) -> None:
        what = str(op)
        if isinstance(op, AddVirtualServer | EditVirtualServer):
            key = op.spec.key
            if op.spec.scheduler not in SCHEDULERS:
                raise from_errno(errno.ENOENT, what)
            if isinstance(op, AddVirtualServer):
                if key in self._table:
                    raise from_errno(errno.EEXIST, what)
                self._table[key] = _Entry(ObservedVirtualServer(op.spec, {}))
            else:
                entry = self._vs(key, what)
                entry.observed = replace(entry.observed, spec=op.spec)
        elif isinstance(op, DeleteVirtualServer):
            self._vs(op.key, what)
            del self._table[op.key]
        elif isinstance(op, AddRealServer | EditRealServer):
            entry = self._vs(op.virtual_server, what)
            spec = op.spec
            if spec.weight < 0 or not 0 <= spec.key.port <= 65535:
                raise from_errno(errno.EINVAL, what)
            family = op.virtual_server.family
            if (
                address_family(spec.key.address) != family
                and spec.forwarding is not Forwarding.TUNNEL
            ):
                raise from_errno(errno.EAFNOSUPPORT, what)
            existing = entry.real_servers.get(spec.key)
            if isinstance(op, AddRealServer):
                if existing is not None:
                    raise from_errno(errno.EEXIST, what)
                entry.real_servers[spec.key] = ObservedRealServer(spec)
            else:
                if existing is None:
                    raise from_errno(errno.ENOENT, what)
                entry.real_servers[spec.key] = replace(existing, spec=spec)
        elif isinstance(op, DeleteRealServer):
            entry = self._vs(op.virtual_server, what)
            if op.key not in entry.real_servers:
                raise from_errno(errno.ENOENT, what)
            del entry.real_servers[op.key]
        self.applied.append(op)

    def _vs(self, key: VirtualServerKey, what: str) -> _Entry:
        entry = self._table.get(key)
        if entry is None:
            raise from_errno(errno.ESRCH, what)
        return entry

    def set_connections(
        self, vs: VirtualServerKey, rs: RealServerKey, active: int, inactive: int
    ) -> None:
        entry = self._table[vs]
        entry.real_servers[rs] = replace(
            entry.real_servers[rs], active_connections=active, inactive_connections=inactive
        )

    def keys(self) -> list[VirtualServerKey]:
        return list(self._table)
