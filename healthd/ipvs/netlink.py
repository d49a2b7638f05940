"""The kernel's IPVS table over generic netlink, through pyroute2.  The only importer of pyroute2.

netlink's *service* and *dest* are healthd's virtual server and real server.  pyroute2's
``AsyncIPVS`` socket runs on the daemon's own event loop, one request at a time (a lock; many in
flight overflow its receive buffer, ACKs are dropped and it hangs).  pyroute2 owns the socket:
it binds it, resolves the IPVS family, hands out each request's sequence number (its address
pool) and queues every datagram the kernel sends by the sequence number it answers (its message
queue).  Each request's bytes are ``genl_codec``'s, and the adapter reads its answer's datagrams
from the socket as soon as it has sent the request (the kernel has answered by then), from
pyroute2's queue only what is not there yet, and splits them into messages with the codec, as
the raw adapter does.

Measured on the way (docs/benchmarks.md): pyroute2's blocking socket on a thread competed for
the GIL with the busy event loop (1 000 destinations took 58-90 s to build in the test VM, 7 s
alone); its attribute encoding cost ~0.4 ms of CPU per request on a server (17-22 ms in the
test VM); its decoding of every attribute of every dump message ten times the codec's, and even
with only the headers decoded, its message objects and answer generators still cost ~130 µs per
real server per dump in the test VM (170 ms for 1 000 against the raw adapter's 40 ms), on every
reconcile pass.

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
import contextlib
import errno
from collections.abc import Collection, Iterator
from typing import Any

from healthd import bare
from healthd.ipvs import genl_codec
from healthd.ipvs.dumps import TableReader
from healthd.ipvs.errors import (
    NEEDS_ROOT,
    UNAVAILABLE,
    IpvsTransient,
    IpvsUnavailable,
    from_errno,
)
from healthd.model import (
    Desired,
    Observed,
    Op,
    VirtualServerKey,
)

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

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        async with self._lock:
            return await self._reader.read(keys, self._dump_request, like)

    async def _dump_request(self, cmd: int, attrs: bytes, what: str) -> Iterator[bytes]:
        return await self._send(what, cmd, genl_codec.NLM_F_DUMP, attrs)

    async def apply(self, op: Op) -> None:
        cmd, attrs = genl_codec.request_for(op)
        async with self._lock:
            await self._send(str(op), cmd, genl_codec.NLM_F_ACK, attrs)

    async def close(self) -> None:
        self._disconnect()

    async def _connect(self) -> Any:
        bare.enter("pyroute2")  # its IPVS socket, not all of pyroute2
        from pyroute2.ipvs import AsyncIPVS
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
                    raise IpvsUnavailable(NEEDS_ROOT, errno.EPERM) from exc
                raise
            self._socket = sock
        return self._socket

    def _disconnect(self) -> None:
        if self._socket is not None:
            sock, self._socket = self._socket, None
            sock.close()

    async def _send(self, what: str, cmd: int, flags: int, attrs: bytes = b"") -> Iterator[bytes]:
        """One request (the caller holds the lock); its answer messages (none for an ACK).
        Raises ``IpvsError``; a request abandoned half-way (an error, a cancellation) drops the
        socket, so no late answer is read as the next request's."""
        sock = await self._connect()
        seq = sock.addr_pool.alloc()
        queue = sock.msg_queue
        queue.ensure_tag(seq)  # pyroute2 queues datagrams answering ``seq`` here
        answer = genl_codec.Answer(seq)
        try:
            sock.send(
                genl_codec.message(sock.prid, genl_codec.NLM_F_REQUEST | flags, seq, cmd, attrs)
            )
            # The kernel handles a request inside send() and queues its answer on the socket
            # before send() returns (a dump's next datagram, inside the read of the one before):
            # read it from the socket at once.  pyroute2's reader, a callback of the event
            # loop, cannot have taken any of it, since the loop has not run since send().  Only
            # if the socket has nothing (yet) does the rest come through pyroute2's queue.  In a
            # loop busy with probes, each trip through it cost a request tens of milliseconds
            # (1 000 destinations took 31 s to add in the test VM).
            while True:
                try:
                    data = sock.recv(genl_codec.RECV_BUFFER)
                except BlockingIOError:
                    break
                if answer.feed(data):
                    break
            while answer.error is None and not answer.feed(await queue.get(seq)):
                pass
        except OSError as exc:  # ENOBUFS and friends leave the socket unusable
            raise IpvsTransient(f"{what}: {exc}", exc.errno or 0) from exc
        except Exception as exc:  # pyroute2 internals; never kill the daemon
            raise IpvsTransient(f"{what}: {exc!r}") from exc
        finally:
            with contextlib.suppress(KeyError):
                queue.free_tag(seq)
            # Free at once: pyroute2's own requests ban a number for the next 255, and every
            # allocation then walks that list (23 µs per request against 1.5 on a server).  No
            # late answer can come for it: a request not read to its end drops the socket.
            sock.addr_pool.free(seq)
            if answer.error is None:  # not read to its end (the kernel's error is an end)
                self._disconnect()
        if answer.error:
            raise from_errno(answer.error, what)
        return answer.messages
