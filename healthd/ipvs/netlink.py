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
the test VM; 7 ms with the codec's payload) and its decoding ten times the codec's.
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
import socket
from collections.abc import Collection
from typing import Any

from healthd.ipvs import genl_codec
from healthd.ipvs.errors import IpvsError, IpvsTransient, IpvsUnavailable, from_errno
from healthd.model import (
    Observed,
    ObservedRealServer,
    ObservedVirtualServer,
    Op,
    RealServerKey,
    TrafficStats,
    VirtualServerKey,
    VirtualServerSpec,
)

_DUMP = genl_codec.NLM_F_DUMP
DECODE_SLICE = 256  # dump messages decoded between two turns of the event loop

UNAVAILABLE = (
    "IPVS is not available in this kernel (the ip_vs module is not loaded and could not be "
    "loaded): load it with 'modprobe ip_vs', or run with --dry-run"
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


def encoded_request(cmd: int, attrs: bytes) -> Any:
    """A pyroute2 message carrying the generic-netlink command ``cmd`` with ``attrs``."""
    msg = _request_class()()
    msg.payload = genl_codec.GENLHDR.pack(cmd, genl_codec.IPVS_GENL_VERSION, 0) + attrs
    return msg


def message_bytes(msg: Any) -> bytes:
    """The bytes of one message pyroute2 received (its buffer may hold a whole datagram)."""
    start = msg.offset
    return bytes(msg.data[start : start + msg["header"]["length"]])


def parse_service(msg: Any) -> tuple[VirtualServerSpec, TrafficStats]:
    """A GET_SERVICE dump message, read from its bytes by ``genl_codec`` (pyroute2's own
    attribute decoding costs ~190 us per message here, the codec ~15: at 1 000 real servers a
    dump through pyroute2 held the adapter thread, and the GIL, for seconds in the VM)."""
    return genl_codec.decode_service(message_bytes(msg))


def parse_dest(msg: Any, service_family: int) -> ObservedRealServer:
    """A GET_DEST dump message of a service of ``service_family`` (4 or 6)."""
    af = socket.AF_INET6 if service_family == 6 else socket.AF_INET
    return genl_codec.decode_dest(message_bytes(msg), af)


# ---- the adapter ------------------------------------------------------------------------------


class NetlinkIpvs:
    """``IpvsPort`` on the kernel.  Open with ``await NetlinkIpvs.open()``."""

    def __init__(self) -> None:
        self._socket: Any = None
        self._lock = asyncio.Lock()
        # the last dump's real servers by message body: an unchanged one is not decoded again,
        # and the loop is yielded to only while decoding (as the raw adapter does)
        self._decoded: dict[bytes, ObservedRealServer] = {}

    @classmethod
    async def open(cls) -> NetlinkIpvs:
        """Connect and read the table once; raises ``IpvsUnavailable`` with one clear sentence."""
        adapter = cls()
        try:
            async with adapter._lock:
                await adapter._send("dumping virtual servers", genl_codec.CMD_GET_SERVICE, _DUMP)
        except BaseException:
            await adapter.close()
            raise
        return adapter

    async def dump(self, keys: Collection[VirtualServerKey]) -> Observed:
        wanted = frozenset(keys)
        observed: dict[VirtualServerKey, ObservedVirtualServer] = {}
        previous, cache = self._decoded, {}
        async with self._lock:
            services = await self._send(
                "dumping virtual servers", genl_codec.CMD_GET_SERVICE, _DUMP
            )
            for msg in services:
                spec, stats = parse_service(msg)
                if spec.key not in wanted:
                    continue  # not ours: never touched, not even read further
                real_servers: dict[RealServerKey, ObservedRealServer] = {}
                dests = await self._send(
                    f"dumping real servers of {spec.key}",
                    genl_codec.CMD_GET_DEST,
                    _DUMP,
                    genl_codec.service_nest(spec.key),
                )
                decoded = 0
                for dmsg in dests:
                    data = message_bytes(dmsg)
                    body = data[16:]  # without the netlink header (its sequence number changes)
                    rs = previous.get(body)
                    if rs is None:
                        af = socket.AF_INET6 if spec.key.family == 6 else socket.AF_INET
                        rs = genl_codec.decode_dest(data, af)
                        decoded += 1
                        if decoded % DECODE_SLICE == 0:
                            await asyncio.sleep(0)  # let probes run between slices
                    cache[body] = rs
                    real_servers[rs.spec.key] = rs
                observed[spec.key] = ObservedVirtualServer(spec, real_servers, stats)
        self._decoded = cache
        return observed

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
            except BaseException as exc:
                sock.close()
                if isinstance(exc, NetlinkError):
                    if exc.code in (errno.ENOENT, errno.EOPNOTSUPP):
                        raise IpvsUnavailable(UNAVAILABLE, exc.code) from exc
                    raise from_errno(exc.code, "opening the IPVS netlink socket") from exc
                if isinstance(exc, PermissionError):
                    raise IpvsUnavailable(
                        "IPVS needs root (CAP_NET_ADMIN): run healthd as root, or with --dry-run",
                        errno.EPERM,
                    ) from exc
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
