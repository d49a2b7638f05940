"""The kernel's IPVS table over generic netlink, through pyroute2.  The only importer of pyroute2.

netlink's *service* and *dest* are healthd's virtual server and real server.  pyroute2's ``IPVS``
socket is blocking (it runs its own event loop per call), so every call runs on one dedicated
worker thread: that keeps the daemon's event loop free, and keeps exactly one request in flight
on the socket (many in flight overflow its receive buffer, ACKs are dropped and it hangs).
pyroute2 sends every request, reads every answer and maps errors; the attributes of a dump's
messages are read from their bytes by ``genl_codec``, the raw adapter's decoder (pyroute2's own
attribute decoding costs ten times as much, and a pass dumps every real server).

pyroute2 traps guarded here (see docs/design.md and tests/ipvs/test_netlink_messages.py):
- ``IPVSDest`` defaults to fwd_method 3 (DR) and SET_DEST replaces every attribute it receives:
  every dest we send is built complete from our own spec, never from a dump or from defaults.
- ``IPVSService`` defaults to scheduler wlc, timeout 0 and flags 0/0xffff: every service we send
  carries our scheduler, timeout and flags (mask: the persistent bit only).
- the "update" verb is mapped to DEL_*: only add/set/del/dump are used.
- the netmask attribute is decoded as an IPv4 address; for IPv6 the kernel wants the prefix
  length 128 as a host-order u32, which is "128.0.0.0" in that encoding on little-endian hosts.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from healthd.ipvs import genl_codec
from healthd.ipvs.errors import IpvsError, IpvsTransient, IpvsUnavailable, from_errno
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    EditRealServer,
    EditVirtualServer,
    Observed,
    ObservedRealServer,
    ObservedVirtualServer,
    Op,
    RealServerSpec,
    TrafficStats,
    VirtualServerKey,
    VirtualServerSpec,
)

T = TypeVar("T")

UNAVAILABLE = (
    "IPVS is not available in this kernel (the ip_vs module is not loaded and could not be "
    "loaded): load it with 'modprobe ip_vs', or run with --dry-run"
)


# ---- pure message building and parsing (unit-tested without a kernel) -------------------------


def _netmask(family: int) -> str:
    if family == 6:
        return "128.0.0.0" if sys.byteorder == "little" else "0.0.0.128"
    return "255.255.255.255"


def service_fields(spec: VirtualServerSpec) -> dict[str, Any]:
    """Every attribute of a service, complete (for add and set)."""
    fields = service_key_fields(spec.key)
    persistent = spec.persistence_timeout_s > 0
    fields.update(
        sched_name=spec.scheduler,
        timeout=spec.persistence_timeout_s,
        flags={
            "flags": genl_codec.IP_VS_SVC_F_PERSISTENT if persistent else 0,
            "mask": genl_codec.IP_VS_SVC_F_PERSISTENT,
        },
        netmask=_netmask(spec.key.family),
    )
    return fields


def service_key_fields(key: VirtualServerKey) -> dict[str, Any]:
    family = socket.AF_INET6 if key.family == 6 else socket.AF_INET
    if key.fwmark:
        return {"af": family, "fwmark": key.fwmark}
    assert key.protocol is not None
    return {
        "af": family,
        "protocol": genl_codec.PROTO_TO_KERNEL[key.protocol],
        "addr": key.address,
        "port": key.port,
    }


def dest_fields(spec: RealServerSpec) -> dict[str, Any]:
    """Every attribute of a dest, complete: never let pyroute2's defaults (DR!) through."""
    return {
        "addr": spec.key.address,
        "port": spec.key.port,
        "fwd_method": genl_codec.FWD_TO_KERNEL[spec.forwarding],
        "weight": spec.weight,
        "u_thresh": spec.upper_threshold,
        "l_thresh": spec.lower_threshold,
        "tun_type": 0,
        "tun_port": 0,
        "tun_flags": 0,
    }


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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healthd-netlink")
        self._socket: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def open(cls) -> NetlinkIpvs:
        """Connect and read the table once; raises ``IpvsUnavailable`` with one clear sentence."""
        adapter = cls()
        try:
            await adapter._call(adapter._connect)
            await adapter._call(adapter._dump_services)
        except BaseException:
            await adapter.close()
            raise
        return adapter

    async def dump(self, keys: Collection[VirtualServerKey]) -> Observed:
        wanted = frozenset(keys)
        observed: Observed = await self._call(lambda: self._dump_sync(wanted))
        return observed

    async def apply(self, op: Op) -> None:
        await self._call(lambda: self._apply_sync(op))

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=False)

    async def _call(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # ---- on the worker thread only ----------------------------------------------------------

    def _connect(self) -> Any:
        from pyroute2 import IPVS
        from pyroute2.netlink.exceptions import NetlinkError

        if self._socket is None:
            # pyroute2 runs an event loop of its own on this thread: made here, so that it is
            # closed with the socket, also when opening fails (pyroute2 leaves the one it makes
            # open then, and its finalizer fails at exit)
            self._loop = asyncio.new_event_loop()
            try:
                self._socket = IPVS(use_event_loop=self._loop)
            except BaseException as exc:
                self._close_loop()
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
        return self._socket

    def _close_loop(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _disconnect(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None
                self._close_loop()

    def _request(self, what: str, fn: Any) -> Any:
        from pyroute2.netlink.exceptions import NetlinkError

        sock = self._connect()
        try:
            return fn(sock)
        except NetlinkError as exc:
            raise from_errno(exc.code, what) from exc
        except OSError as exc:
            # ENOBUFS and friends leave the socket unusable: start over on a fresh one.
            self._disconnect()
            raise IpvsTransient(f"{what}: {exc}", exc.errno or 0) from exc
        except IpvsError:
            raise
        except Exception as exc:  # pyroute2 internals; never kill the daemon
            self._disconnect()
            raise IpvsTransient(f"{what}: {exc!r}") from exc

    def _dump_services(self) -> list[Any]:
        return list(self._request("dumping virtual servers", lambda s: s.service("dump")))

    def _dump_sync(self, wanted: frozenset[VirtualServerKey]) -> Observed:
        from pyroute2 import IPVSService

        observed: dict[VirtualServerKey, ObservedVirtualServer] = {}
        for msg in self._dump_services():
            spec, stats = parse_service(msg)
            if spec.key not in wanted:
                continue  # not ours: never touched, not even read further
            service = IPVSService(**service_key_fields(spec.key))
            dests = self._request(
                f"dumping real servers of {spec.key}", lambda s, svc=service: s.dest("dump", svc)
            )
            real_servers = {}
            for dmsg in dests:
                rs = parse_dest(dmsg, spec.key.family)
                real_servers[rs.spec.key] = rs
            observed[spec.key] = ObservedVirtualServer(spec, real_servers, stats)
        return observed

    def _apply_sync(self, op: Op) -> None:
        from pyroute2 import IPVSDest, IPVSService

        what = str(op)
        if isinstance(op, AddVirtualServer | EditVirtualServer):
            verb = "add" if isinstance(op, AddVirtualServer) else "set"
            svc = IPVSService(**service_fields(op.spec))
            self._request(what, lambda s: s.service(verb, service=svc))
        elif isinstance(op, DeleteVirtualServer):
            svc = IPVSService(**service_key_fields(op.key))
            self._request(what, lambda s: s.service("del", service=svc))
        elif isinstance(op, AddRealServer | EditRealServer):
            verb = "add" if isinstance(op, AddRealServer) else "set"
            svc = IPVSService(**service_key_fields(op.virtual_server))
            dest = IPVSDest(**dest_fields(op.spec))
            self._request(what, lambda s: s.dest(verb, service=svc, dest=dest))
        elif isinstance(op, DeleteRealServer):
            svc = IPVSService(**service_key_fields(op.virtual_server))
            dest = IPVSDest(addr=op.key.address, port=op.key.port)
            self._request(what, lambda s: s.dest("del", service=svc, dest=dest))
        else:  # pragma: no cover - exhaustive
            raise TypeError(f"unknown operation {op!r}")
