"""Reading our part of the kernel's IPVS table from dump answers; both adapters use it.

``TableReader.read`` asks for the virtual servers, keeps those in ``keys`` (nothing else is read
further), asks for each one's real servers and decodes the answers with ``genl_codec``.  It
remembers the last dump's real servers by the hash of their message body (without the netlink
header, whose sequence number changes): an idle real server (same weight, same counters) is not
decoded again but answered with last dump's very object (the reconciler's snapshot relies on
it: an unchanged real server is the same object from pass to pass), and the event loop is
yielded to between slices of messages, so neither a large
first dump nor the look-ups of a later one hold up the probes.  The hash (Python's 64-bit
SipHash, keyed at random per process) rather than the body itself: the bodies were ~270 bytes
per real server kept between passes, and a second copy of each made during every pass (~5 MB at
10 000 real servers); a changed body taken for an unchanged one would need a 1 in 2^64
collision.  Given the desired table (``like``), a decoded real server takes its spec when the
kernel holds it as desired, else its key: the keys and specs are then held once, not twice.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import replace

from healthd.ipvs import genl_codec
from healthd.model import (
    Desired,
    DesiredRealServer,
    Observed,
    ObservedRealServer,
    ObservedVirtualServer,
    RealServerKey,
    VirtualServerKey,
)

# The event loop is yielded to after SLICE_WORK units: a message found unchanged is one, a
# decoded one DECODE_COST more (256 decoded or 1 024 unchanged messages per slice, ~2 ms each)
SLICE_WORK = 1024
DECODE_COST = 3
# (command, attributes, what it is for an error message) -> the answer's messages, as bytes
DumpRequest = Callable[[int, bytes, str], Awaitable[Iterable[bytes]]]


class TableReader:
    def __init__(self) -> None:
        self._decoded: dict[int, ObservedRealServer] = {}  # one dump's worth, by body hash

    async def read(
        self, keys: Collection[VirtualServerKey], request: DumpRequest, like: Desired | None = None
    ) -> Observed:
        wanted = frozenset(keys)
        observed: dict[VirtualServerKey, ObservedVirtualServer] = {}
        previous, cache = self._decoded, {}
        work = 0  # since the last yield, in messages looked up (decoding one counts more)
        services = await request(genl_codec.CMD_GET_SERVICE, b"", "dumping virtual servers")
        for msg in services:
            spec, stats = genl_codec.decode_service(msg)
            if spec.key not in wanted:
                continue  # not ours: never touched, not even read further
            af = socket.AF_INET6 if spec.key.family == 6 else socket.AF_INET
            dests = await request(
                genl_codec.CMD_GET_DEST,
                genl_codec.service_nest(spec.key),
                f"dumping real servers of {spec.key}",
            )
            real_servers: dict[RealServerKey, ObservedRealServer] = {}
            desired_vs = like.get(spec.key) if like is not None else None
            known = desired_vs.real_servers if desired_vs is not None else {}
            for dmsg in dests:
                body = hash(dmsg[16:])  # a copy that dies at once: faster than a view
                rs = previous.get(body)  # unchanged since the last dump: no decoding
                work += 1
                if rs is None:
                    rs = _sharing(genl_codec.decode_dest(dmsg, af), known)
                    work += DECODE_COST
                if work >= SLICE_WORK:
                    work = 0
                    await asyncio.sleep(0)  # let probes run between slices
                cache[body] = rs
                real_servers[rs.spec.key] = rs
            observed[spec.key] = ObservedVirtualServer(spec, real_servers, stats)
        self._decoded = cache
        return observed


def _sharing(
    rs: ObservedRealServer, known: Mapping[RealServerKey, DesiredRealServer]
) -> ObservedRealServer:
    """``rs`` with the desired table's spec when it is the same, else with its key: at 10 000
    real servers the decoded keys and specs (address, port, key, spec) were ~2 MB held twice."""
    wanted = known.get(rs.spec.key)
    if wanted is None:
        return rs
    spec = wanted.spec if wanted.spec == rs.spec else replace(rs.spec, key=wanted.spec.key)
    return replace(rs, spec=spec)
