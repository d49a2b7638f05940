"""The kernel's IPVS table over generic netlink, through pyroute2.  The only importer of pyroute2.

netlink's *service* and *dest* are healthd's virtual server and real server.  pyroute2's
``AsyncIPVS`` socket runs on the daemon's own event loop, one request at a time (a lock; many in
flight overflow its receive buffer, ACKs are dropped and it hangs).  It used to be the blocking
``IPVS`` socket on a thread of its own: that thread ran pyroute2's request machinery in Python,
and competed for the GIL with the event loop, so while the loop was busy probing a request took
ten times as long (1 000 destinations took 58-90 s to build in the test VM, 7 s alone).
pyroute2 owns the socket: it resolves the IPVS family, numbers, sends and reads every
request, and maps every error.  The generic-netlink payload of each request is encoded, and the
attributes of each dump message are decoded, by ``genl_codec``, the raw adapter's codec:
pyroute2's own attribute encoding cost ~0.4 ms of CPU per request on a server (17-22 ms in
the test VM; 2-3 ms now) and its decoding ten times the codec's (``ipvs/dumps.py`` reads the
table for both adapters), so pyroute2 reads only the header of each answer (``answer_class``).
``EncodedRequest`` is the pyroute2 message that carries such a payload: pyroute2 fills in its
header (type, flags, sequence number, port id) as for any message.

pyroute2 traps that no longer apply because its IPVS field helpers are not used, kept here as
the reason why (tests/ipvs/test_netlink_messages.py reads our requests back with pyroute2's
parser to guard the same facts):
- ``IPVSDest`` defaults to fwd_method 3 (DR) and SET_DEST replaces every attribute it receives:
  every dest we send is complete, from our own spec.
- ``IPVSService`` defaults to scheduler wlc, timeout 0 and flags 0/0xffff: every service we send
  carries our scheduler, timeout and flags (mask: the persistent bit only).
- the "update" verb is mapped to DEL_*: we name the command itself.
- many requests in flight on one socket overflow its receive buffer (ACKs are dropped and it
  hangs): one request at a time.
"""

from __future__ import annotations

import asyncio
import errno
import functools
from collections.abc import Collection
from typing import Any

from healthd.ipvs import genl_codec
from healthd.ipvs.dumps import TableReader
from healthd.ipvs.errors import (
    NEEDS_ROOT,
    UNAVAILABLE,
    IpvsError,
    IpvsTransient,
    IpvsUnavailable,
    from_errno,
)
from healthd.model import (
    Observed,
    Op,
    VirtualServerKey,
)

# ---- pure message building and parsing (unit-tested without a kernel) -------------------------


@functools.cache
def _request_class() -> type:
    """``EncodedRequest``: a pyroute2 message whose payload genl_codec encoded (made on first
    use: only the adapter in use imports pyroute2)."""
    from pyroute2.netlink import nlmsg

    class EncodedRequest(nlmsg):  # type: ignore[misc]
        payload = b""

        def encode(self) -> EncodedRequest:
            header = self["header"]
            self.data = (
                genl_codec.NLMSGHDR.pack(
                    16 + len(self.payload),
                    header["type"],
                    header["flags"],
                    header["sequence_number"],
                    header["pid"],
                )
                + self.payload
            )
            return self

    return EncodedRequest


@functools.cache
def answer_class() -> type:
    """``RawAnswer``: how pyroute2 reads the IPVS family's answers on our socket: the netlink
    header only (pyroute2 needs its length, type, flags and sequence number); ``genl_codec``
    decodes the rest.  pyroute2's own ``ipvsmsg`` decodes every attribute of every message of a
    dump first, ~16-56 µs per real server on a server (tenfold in the test VM, where a dump of
    1 000 real servers took about a second of the event loop's time); this is ~3-6 µs."""
    from pyroute2.netlink import nlmsg

    header = genl_codec.NLMSGHDR

    class RawAnswer(nlmsg):  # type: ignore[misc]
        def decode(self) -> None:
            length, kind, flags, seq, pid = header.unpack_from(self.data, self.offset)
            fields = self["header"]
            fields["length"], fields["type"], fields["flags"] = length, kind, flags
            fields["sequence_number"], fields["pid"] = seq, pid
            self.length = length
            self.decoded = True

    return RawAnswer


def encoded_request(cmd: int, attrs: bytes) -> Any:
    """A pyroute2 message carrying the generic-netlink command ``cmd`` with ``attrs``."""
    msg = _request_class()()
    msg.payload = genl_codec.GENLHDR.pack(cmd, genl_codec.IPVS_GENL_VERSION, 0) + attrs
    return msg


def message_bytes(msg: Any) -> bytes:
    """The bytes of one message pyroute2 received (its buffer may hold a whole datagram)."""
    start = msg.offset
    return bytes(msg.data[start : start + msg["header"]["length"]])


# ---- the adapter ------------------------------------------------------------------------------


class NetlinkIpvs:
    """``IpvsPort`` on the kernel.  Open with ``await NetlinkIpvs.open()``."""

    def __init__(self) -> None:
        self._socket: Any = None
        self._lock = asyncio.Lock()
        self._reader = TableReader()

    @classmethod
    async def open(cls) -> NetlinkIpvs:
        """Connect and read the table once; raises ``IpvsUnavailable`` with one clear sentence."""
        adapter = cls()
        try:
            async with adapter._lock:
                await adapter._send(
                    "dumping virtual servers",
                    genl_codec.CMD_GET_SERVICE,
                    genl_codec.NLM_F_DUMP,
                )
        except BaseException:
            await adapter.close()
            raise
        return adapter

    async def dump(self, keys: Collection[VirtualServerKey]) -> Observed:
        async with self._lock:
            return await self._reader.read(keys, self._dump_request)

    async def _dump_request(self, cmd: int, attrs: bytes, what: str) -> list[bytes]:
        return [
            message_bytes(msg) for msg in await self._send(what, cmd, genl_codec.NLM_F_DUMP, attrs)
        ]

    async def apply(self, op: Op) -> None:
        cmd, attrs = genl_codec.request_for(op)
        async with self._lock:
            await self._send(str(op), cmd, genl_codec.NLM_F_ACK, attrs)

    async def close(self) -> None:
        self._disconnect()

    async def _connect(self) -> Any:
        from pyroute2 import AsyncIPVS
        from pyroute2.netlink.exceptions import NetlinkError

        if self._socket is None:
            sock = AsyncIPVS()
            try:
                await sock.setup_endpoint()  # binds the socket, resolves the IPVS family
                sock.marshal.msg_map[sock.prid] = answer_class()  # (not pyroute2's ipvsmsg)
            except BaseException as exc:
                sock.close()
                if isinstance(exc, NetlinkError):
                    if exc.code in (errno.ENOENT, errno.EOPNOTSUPP):
                        raise IpvsUnavailable(UNAVAILABLE, exc.code) from exc
                    raise from_errno(exc.code, "opening the IPVS netlink socket") from exc
                if isinstance(exc, PermissionError):
                    raise IpvsUnavailable(NEEDS_ROOT, errno.EPERM) from exc
                raise
            self._socket = sock
        return self._socket

    def _disconnect(self) -> None:
        if self._socket is not None:
            sock, self._socket = self._socket, None
            sock.close()

    async def _send(self, what: str, cmd: int, flags: int, attrs: bytes = b"") -> list[Any]:
        """One request (the caller holds the lock); its answer messages (none for an ACK).
        Raises ``IpvsError``; a request abandoned half-way (an error, a cancellation) drops the
        socket, so no late answer is read as the next request's."""
        from pyroute2.netlink.exceptions import NetlinkError

        sock = await self._connect()
        done = False
        try:
            answers = await sock.nlm_request(
                encoded_request(cmd, attrs),
                msg_type=sock.prid,
                msg_flags=genl_codec.NLM_F_REQUEST | flags,
            )
            out = [msg async for msg in answers]
            done = True
            return out
        except NetlinkError as exc:
            done = True  # the kernel's answer: the socket is fine
            raise from_errno(exc.code, what) from exc
        except OSError as exc:  # ENOBUFS and friends leave the socket unusable
            raise IpvsTransient(f"{what}: {exc}", exc.errno or 0) from exc
        except IpvsError:
            raise
        except Exception as exc:  # pyroute2 internals; never kill the daemon
            raise IpvsTransient(f"{what}: {exc!r}") from exc
        finally:
            if not done:
                self._disconnect()
