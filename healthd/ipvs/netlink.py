"""The kernel's IPVS table over generic netlink, through pyroute2.  The only importer of pyroute2.

netlink's *service* and *dest* are healthd's virtual server and real server.  pyroute2's ``IPVS``
socket is blocking (it runs its own event loop per call), so every call runs on one dedicated
worker thread: that keeps the daemon's event loop free, and keeps exactly one request in flight
on the socket (many in flight overflow its receive buffer, ACKs are dropped and it hangs).

pyroute2 traps guarded here (see docs/ipvs-netlink.md and tests/ipvs/test_netlink_messages.py):
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

from healthd.ipvs.errors import IpvsError, IpvsTransient, IpvsUnavailable, from_errno
from healthd.model import (
    NO_TRAFFIC,
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    EditRealServer,
    EditVirtualServer,
    Forwarding,
    Observed,
    ObservedRealServer,
    ObservedVirtualServer,
    Op,
    Protocol,
    RealServerKey,
    RealServerSpec,
    TrafficStats,
    VirtualServerKey,
    VirtualServerSpec,
    traffic,
)

T = TypeVar("T")

IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_CONN_F_FWD_MASK = 0x0007
_FWD_TO_KERNEL = {Forwarding.NAT: 0, Forwarding.TUNNEL: 2, Forwarding.DR: 3}
_FWD_FROM_KERNEL = {v: k for k, v in _FWD_TO_KERNEL.items()}
_PROTO_TO_KERNEL = {
    Protocol.TCP: socket.IPPROTO_TCP,
    Protocol.UDP: socket.IPPROTO_UDP,
    Protocol.SCTP: 132,
}
_PROTO_FROM_KERNEL = {v: k for k, v in _PROTO_TO_KERNEL.items()}
_STATS_FIELDS = (
    ("connections", "IPVS_STATS_ATTR_CONNS"),
    ("packets_in", "IPVS_STATS_ATTR_INPKTS"),
    ("packets_out", "IPVS_STATS_ATTR_OUTPKTS"),
    ("bytes_in", "IPVS_STATS_ATTR_INBYTES"),
    ("bytes_out", "IPVS_STATS_ATTR_OUTBYTES"),
    ("cps", "IPVS_STATS_ATTR_CPS"),
    ("packets_in_per_s", "IPVS_STATS_ATTR_INPPS"),
    ("packets_out_per_s", "IPVS_STATS_ATTR_OUTPPS"),
    ("bytes_in_per_s", "IPVS_STATS_ATTR_INBPS"),
    ("bytes_out_per_s", "IPVS_STATS_ATTR_OUTBPS"),
)
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
            "flags": IP_VS_SVC_F_PERSISTENT if persistent else 0,
            "mask": IP_VS_SVC_F_PERSISTENT,
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
        "protocol": _PROTO_TO_KERNEL[key.protocol],
        "addr": key.address,
        "port": key.port,
    }


def dest_fields(spec: RealServerSpec) -> dict[str, Any]:
    """Every attribute of a dest, complete: never let pyroute2's defaults (DR!) through."""
    return {
        "addr": spec.key.address,
        "port": spec.key.port,
        "fwd_method": _FWD_TO_KERNEL[spec.forwarding],
        "weight": spec.weight,
        "u_thresh": spec.upper_threshold,
        "l_thresh": spec.lower_threshold,
        "tun_type": 0,
        "tun_port": 0,
        "tun_flags": 0,
    }


def _attrs(nla: Any) -> dict[str, Any]:
    """An attribute nest as a dict, decoded once (pyroute2's ``get`` walks and decodes the whole
    nest on every call: ~10x the cost for a real server's twenty attributes)."""
    return {} if nla is None else dict(nla["attrs"])


def _stats(nla: Any) -> TrafficStats:
    if nla is None:
        return NO_TRAFFIC
    values = _attrs(nla)
    return traffic([int(values.get(attr) or 0) for _, attr in _STATS_FIELDS])


def parse_service(msg: Any) -> tuple[VirtualServerSpec, TrafficStats]:
    svc = _attrs(_attrs(msg).get("IPVS_CMD_ATTR_SERVICE"))
    family = 6 if svc.get("IPVS_SVC_ATTR_AF") == socket.AF_INET6 else 4
    fwmark = svc.get("IPVS_SVC_ATTR_FWMARK") or 0
    if fwmark:
        key = VirtualServerKey.for_fwmark(fwmark, family)
    else:
        protocol = _PROTO_FROM_KERNEL.get(
            int(svc.get("IPVS_SVC_ATTR_PROTOCOL") or 0), Protocol.TCP
        )
        key = VirtualServerKey.for_address(
            protocol, str(svc.get("IPVS_SVC_ATTR_ADDR")), int(svc.get("IPVS_SVC_ATTR_PORT") or 0)
        )
    flags = svc.get("IPVS_SVC_ATTR_FLAGS")
    persistent = bool(flags and flags.get("flags", 0) & IP_VS_SVC_F_PERSISTENT)
    spec = VirtualServerSpec(
        key=key,
        scheduler=svc.get("IPVS_SVC_ATTR_SCHED_NAME") or "",
        persistence_timeout_s=int(svc.get("IPVS_SVC_ATTR_TIMEOUT") or 0) if persistent else 0,
    )
    return spec, _stats(svc.get("IPVS_SVC_ATTR_STATS64"))


def parse_dest(msg: Any) -> ObservedRealServer:
    d = _attrs(_attrs(msg).get("IPVS_CMD_ATTR_DEST"))
    fwd = int(d.get("IPVS_DEST_ATTR_FWD_METHOD") or 0) & IP_VS_CONN_F_FWD_MASK
    spec = RealServerSpec(
        key=RealServerKey(
            str(d.get("IPVS_DEST_ATTR_ADDR")), int(d.get("IPVS_DEST_ATTR_PORT") or 0)
        ),
        forwarding=_FWD_FROM_KERNEL.get(fwd, Forwarding.DR),
        weight=int(d.get("IPVS_DEST_ATTR_WEIGHT") or 0),
        upper_threshold=int(d.get("IPVS_DEST_ATTR_U_THRESH") or 0),
        lower_threshold=int(d.get("IPVS_DEST_ATTR_L_THRESH") or 0),
    )
    return ObservedRealServer(
        spec=spec,
        active_connections=int(d.get("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0),
        inactive_connections=int(d.get("IPVS_DEST_ATTR_INACT_CONNS") or 0),
        persistent_connections=int(d.get("IPVS_DEST_ATTR_PERSIST_CONNS") or 0),
        stats=_stats(d.get("IPVS_DEST_ATTR_STATS64")),
    )


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
                rs = parse_dest(dmsg)
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
