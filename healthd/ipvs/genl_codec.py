"""IPVS generic netlink messages, encoded and decoded with ``struct``.  Pure: no sockets.

The attribute numbers and layouts are the kernel's (include/uapi/linux/ip_vs.h; the policies
and fill functions in net/netfilter/ipvs/ip_vs_ctl.c).  What is sent is always complete and
built from healthd's own specs (a SET replaces every attribute it carries: never a default from
elsewhere), like ``healthd.ipvs.netlink`` does with pyroute2, at a twentieth of the cost.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

from healthd.model import (
    NO_TRAFFIC,
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    EditRealServer,
    EditVirtualServer,
    Forwarding,
    ObservedRealServer,
    Op,
    Protocol,
    RealServerKey,
    RealServerSpec,
    TrafficStats,
    VirtualServerKey,
    VirtualServerSpec,
    traffic,
)

# netlink and generic netlink
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
# A read of an answer: the kernel makes no netlink datagram larger than 32 KiB (a dump fills up
# to the reader's last buffer size, capped there); a smaller buffer would truncate one.
RECV_BUFFER = 1 << 16

# IPVS
IPVS_GENL_NAME = b"IPVS\0"
IPVS_GENL_VERSION = 1
CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE = 1, 2, 3, 4
CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST = 5, 6, 7, 8
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK, SVC_STATS64 = 6, 7, 8, 9, 12
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ACTIVE_CONNS, DEST_INACT_CONNS, DEST_PERSIST_CONNS = 7, 8, 9
DEST_ADDR_FAMILY, DEST_STATS64, DEST_TUN_TYPE, DEST_TUN_PORT, DEST_TUN_FLAGS = 11, 12, 13, 14, 15
IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_CONN_F_FWD_MASK = 0x0007

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_HEAD = struct.Struct("=IHHI")  # the same, without the pid
GENLHDR = struct.Struct("=BBH")  # cmd, version, reserved
NLA = struct.Struct("=HH")  # len, type
_U16 = struct.Struct("=H")
_BE16 = struct.Struct("!H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_I32 = struct.Struct("=i")

FWD_TO_KERNEL = {Forwarding.NAT: 0, Forwarding.TUNNEL: 2, Forwarding.DR: 3}
FWD_FROM_KERNEL = {v: k for k, v in FWD_TO_KERNEL.items()}
PROTO_TO_KERNEL = {Protocol.TCP: socket.IPPROTO_TCP, Protocol.UDP: socket.IPPROTO_UDP}
PROTO_TO_KERNEL[Protocol.SCTP] = 132
PROTO_FROM_KERNEL = {v: k for k, v in PROTO_TO_KERNEL.items()}
# The fields of TrafficStats in the order of IPVS_STATS_ATTR_CONNS (1) .. OUTBPS (10).
STATS_FIELDS = (
    "connections",
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "cps",
    "packets_in_per_s",
    "packets_out_per_s",
    "bytes_in_per_s",
    "bytes_out_per_s",
)


# ---- encoding ---------------------------------------------------------------------------------


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    size = 4 + len(payload)
    return NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def message(family: int, flags: int, seq: int, cmd: int, attrs: bytes) -> bytes:
    """A complete generic netlink request."""
    body = GENLHDR.pack(cmd, IPVS_GENL_VERSION, 0) + attrs
    return NLMSGHDR.pack(16 + len(body), family, flags, seq, 0) + body


def family_request(seq: int, name: bytes = IPVS_GENL_NAME) -> bytes:
    attrs = nla(CTRL_ATTR_FAMILY_NAME, name)
    body = GENLHDR.pack(CTRL_CMD_GETFAMILY, 1, 0) + attrs
    return NLMSGHDR.pack(16 + len(body), GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _addr(address: str) -> bytes:
    """union nf_inet_addr: 16 bytes, IPv4 in the first four."""
    if ":" in address:
        return socket.inet_pton(socket.AF_INET6, address)
    return socket.inet_aton(address) + b"\0" * 12


def _af(family: int) -> int:
    return socket.AF_INET6 if family == 6 else socket.AF_INET


def _netmask(family: int) -> bytes:
    # IPv4: a be32 mask; IPv6: the prefix length as a host-order u32 (what ipvsadm sends)
    return _U32.pack(128) if family == 6 else b"\xff\xff\xff\xff"


def service_key_attrs(key: VirtualServerKey) -> bytes:
    attrs = nla(SVC_AF, _U16.pack(_af(key.family)))
    if key.fwmark:
        return attrs + nla(SVC_FWMARK, _U32.pack(key.fwmark))
    assert key.protocol is not None
    return (
        attrs
        + nla(SVC_PROTOCOL, _U16.pack(PROTO_TO_KERNEL[key.protocol]))
        + nla(SVC_ADDR, _addr(key.address))
        + nla(SVC_PORT, _BE16.pack(key.port))
    )


def service_nest(spec: VirtualServerSpec | VirtualServerKey) -> bytes:
    """The service attribute: the key only, or (for a spec) every attribute, complete."""
    if isinstance(spec, VirtualServerKey):
        nest = _SERVICE_KEYS.get(spec)
        if nest is None:
            if len(_SERVICE_KEYS) > 4096:
                _SERVICE_KEYS.clear()
            nest = _SERVICE_KEYS[spec] = nla(
                CMD_ATTR_SERVICE | NLA_F_NESTED, service_key_attrs(spec)
            )
        return nest
    persistent = spec.persistence_timeout_s > 0
    flags = struct.pack("=II", IP_VS_SVC_F_PERSISTENT if persistent else 0, IP_VS_SVC_F_PERSISTENT)
    attrs = (
        service_key_attrs(spec.key)
        + nla(SVC_SCHED_NAME, spec.scheduler.encode() + b"\0")
        + nla(SVC_FLAGS, flags)
        + nla(SVC_TIMEOUT, _U32.pack(spec.persistence_timeout_s))
        + nla(SVC_NETMASK, _netmask(spec.key.family))
    )
    return nla(CMD_ATTR_SERVICE | NLA_F_NESTED, attrs)


# A complete dest attribute in one pack: the nest header, ADDR (16 bytes), PORT (be16, packed
# apart), ADDR_FAMILY, FWD_METHOD, WEIGHT, U_THRESH, L_THRESH, TUN_TYPE, TUN_PORT, TUN_FLAGS.
_DEST_FULL = struct.Struct("=HH HH16s HH2s2x HHH2x HHI HHI HHI HHI HHB3x HHH2x HHH2x")
_SERVICE_KEYS: dict[VirtualServerKey, bytes] = {}


def dest_nest(spec: RealServerSpec | RealServerKey) -> bytes:
    """The dest attribute: the key only, or (for a spec) every attribute, complete."""
    key = spec if isinstance(spec, RealServerKey) else spec.key
    af = socket.AF_INET6 if ":" in key.address else socket.AF_INET
    if isinstance(spec, RealServerSpec):
        return _DEST_FULL.pack(
            *(_DEST_FULL.size, CMD_ATTR_DEST | NLA_F_NESTED),
            *(20, DEST_ADDR, _addr(key.address)),
            *(6, DEST_PORT, _BE16.pack(key.port)),
            *(6, DEST_ADDR_FAMILY, af),
            *(8, DEST_FWD_METHOD, FWD_TO_KERNEL[spec.forwarding]),
            *(8, DEST_WEIGHT, spec.weight),
            *(8, DEST_U_THRESH, spec.upper_threshold),
            *(8, DEST_L_THRESH, spec.lower_threshold),
            *(5, DEST_TUN_TYPE, 0),
            *(6, DEST_TUN_PORT, 0),
            *(6, DEST_TUN_FLAGS, 0),
        )
    attrs = nla(DEST_ADDR, _addr(key.address)) + nla(DEST_PORT, _BE16.pack(key.port))
    attrs += nla(DEST_ADDR_FAMILY, _U16.pack(af))
    return nla(CMD_ATTR_DEST | NLA_F_NESTED, attrs)


# ---- decoding ---------------------------------------------------------------------------------


def attrs(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """{type: (payload start, payload end)} of the attributes in buf[start:end]."""
    out: dict[int, tuple[int, int]] = {}
    unpack = NLA.unpack_from
    while start + 4 <= end:
        size, kind = unpack(buf, start)
        if size < 4:
            break
        out[kind & NLA_TYPE_MASK] = (start + 4, start + size)
        start += (size + 3) & ~3
    return out


def _u32(buf: bytes, found: dict[int, tuple[int, int]], kind: int) -> int:
    at = found.get(kind)
    return int(_U32.unpack_from(buf, at[0])[0]) if at else 0


def _u16(buf: bytes, found: dict[int, tuple[int, int]], kind: int) -> int:
    at = found.get(kind)
    return int(_U16.unpack_from(buf, at[0])[0]) if at else 0


def _port(buf: bytes, found: dict[int, tuple[int, int]], kind: int) -> int:
    at = found.get(kind)
    return int(_BE16.unpack_from(buf, at[0])[0]) if at else 0


def _address(buf: bytes, at: tuple[int, int] | None, af: int) -> str:
    if at is None:
        return ""
    if af == socket.AF_INET6:
        return str(ipaddress.IPv6Address(bytes(buf[at[0] : at[0] + 16])))
    return socket.inet_ntoa(bytes(buf[at[0] : at[0] + 4]))


def stats(buf: bytes, at: tuple[int, int] | None) -> TrafficStats:
    if at is None:
        return NO_TRAFFIC
    values = [0] * len(STATS_FIELDS)
    for kind, (start, end) in attrs(buf, at[0], at[1]).items():
        if 1 <= kind <= len(STATS_FIELDS) and end - start == 8:
            values[kind - 1] = _U64.unpack_from(buf, start)[0]
    return traffic(values)


def genl_payload(msg: bytes) -> tuple[int, int]:
    """(start, end) of the attributes of one generic netlink message (header included in msg)."""
    return 20, NLMSGHDR.unpack_from(msg, 0)[0]


def decode_service(msg: bytes) -> tuple[VirtualServerSpec, TrafficStats]:
    """A GET_SERVICE dump message -> (spec, stats)."""
    top = attrs(msg, *genl_payload(msg))
    nest = top[CMD_ATTR_SERVICE]
    svc = attrs(msg, *nest)
    af = _u16(msg, svc, SVC_AF)
    family = 6 if af == socket.AF_INET6 else 4
    fwmark = _u32(msg, svc, SVC_FWMARK)
    if fwmark:
        key = VirtualServerKey.for_fwmark(fwmark, family)
    else:
        protocol = PROTO_FROM_KERNEL.get(_u16(msg, svc, SVC_PROTOCOL), Protocol.TCP)
        address = _address(msg, svc.get(SVC_ADDR), af)
        key = VirtualServerKey.for_address(protocol, address, _port(msg, svc, SVC_PORT))
    flags_at = svc.get(SVC_FLAGS)
    flags = _U32.unpack_from(msg, flags_at[0])[0] if flags_at else 0
    persistent = bool(flags & IP_VS_SVC_F_PERSISTENT)
    sched_at = svc.get(SVC_SCHED_NAME)
    scheduler = msg[sched_at[0] : sched_at[1]].split(b"\0", 1)[0].decode() if sched_at else ""
    spec = VirtualServerSpec(
        key=key,
        scheduler=scheduler,
        persistence_timeout_s=_u32(msg, svc, SVC_TIMEOUT) if persistent else 0,
    )
    return spec, stats(msg, svc.get(SVC_STATS64))


def decode_dest(msg: bytes, service_af: int) -> ObservedRealServer:
    """A GET_DEST dump message -> the observed real server."""
    top = attrs(msg, *genl_payload(msg))
    dest = attrs(msg, *top[CMD_ATTR_DEST])
    af = _u16(msg, dest, DEST_ADDR_FAMILY) or service_af
    fwd = _u32(msg, dest, DEST_FWD_METHOD) & IP_VS_CONN_F_FWD_MASK
    spec = RealServerSpec(
        key=RealServerKey(_address(msg, dest.get(DEST_ADDR), af), _port(msg, dest, DEST_PORT)),
        forwarding=FWD_FROM_KERNEL.get(fwd, Forwarding.DR),
        weight=_u32(msg, dest, DEST_WEIGHT),
        upper_threshold=_u32(msg, dest, DEST_U_THRESH),
        lower_threshold=_u32(msg, dest, DEST_L_THRESH),
    )
    return ObservedRealServer(
        spec=spec,
        active_connections=_u32(msg, dest, DEST_ACTIVE_CONNS),
        inactive_connections=_u32(msg, dest, DEST_INACT_CONNS),
        persistent_connections=_u32(msg, dest, DEST_PERSIST_CONNS),
        stats=stats(msg, dest.get(DEST_STATS64)),
    )


class Answer:
    """The answer to one request, fed the datagrams that came in until it is complete: its data
    messages, then an ACK or the end of a dump (``error`` 0) or the kernel's errno.  Messages of
    another sequence number (a late answer to an abandoned request) are skipped.

    The datagrams are kept whole and ``messages`` cuts them into messages as it is read: a dump
    of 10 000 real servers is 10 000 messages of ~300 bytes on every reconcile pass.  Kept as
    10 000 bytes objects, they left ~5 MB of empty pools in the allocator's small-object arenas
    after each pass, held from the system by the few long-lived objects made meanwhile (the test
    VM's climb after the table was built); made one at a time, each reuses the last one's memory."""

    __slots__ = ("_datagrams", "error", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self._datagrams: list[bytes] = []  # those that hold a data message of ours
        self.error: int | None = None  # None: not complete yet

    def feed(self, data: bytes) -> bool:
        """Take one datagram; True once the answer is complete.  One loop over its messages'
        headers, nothing made for a message."""
        unpack, size_of, ours = _HEAD.unpack_from, len(data), self.seq
        pos = 0
        kept = False
        while pos + 16 <= size_of:
            size, kind, _flags, seq = unpack(data, pos)
            if size < 16:
                break
            if seq == ours:
                if kind == NLMSG_ERROR:
                    self.error = error_code(data[pos : pos + size])
                    return True
                if kind == NLMSG_DONE:
                    self.error = 0
                    return True
                if not kept:
                    self._datagrams.append(data)
                    kept = True
            pos += (size + 3) & ~3
        return False

    @property
    def messages(self) -> Iterator[bytes]:
        """The data messages of ours, in order, each made when it is reached."""
        unpack, ours = _HEAD.unpack_from, self.seq
        for data in self._datagrams:
            size_of, pos = len(data), 0
            while pos + 16 <= size_of:
                size, kind, _flags, seq = unpack(data, pos)
                if size < 16 or (seq == ours and kind in (NLMSG_ERROR, NLMSG_DONE)):
                    break
                if seq == ours:
                    yield data[pos : pos + size]
                pos += (size + 3) & ~3


def error_code(msg: bytes) -> int:
    """The (positive) errno of an NLMSG_ERROR message, 0 for an ACK."""
    return -int(_I32.unpack_from(msg, 16)[0])


def family_id(msg: bytes) -> int | None:
    top = attrs(msg, *genl_payload(msg))
    at = top.get(CTRL_ATTR_FAMILY_ID)
    return int(_U16.unpack_from(msg, at[0])[0]) if at else None


def request_for(op: Op) -> tuple[int, bytes]:
    """(command, attributes) of the request that carries out ``op``."""
    if isinstance(op, AddVirtualServer):
        return CMD_NEW_SERVICE, service_nest(op.spec)
    if isinstance(op, EditVirtualServer):
        return CMD_SET_SERVICE, service_nest(op.spec)
    if isinstance(op, DeleteVirtualServer):
        return CMD_DEL_SERVICE, service_nest(op.key)
    if isinstance(op, AddRealServer):
        return CMD_NEW_DEST, service_nest(op.virtual_server) + dest_nest(op.spec)
    if isinstance(op, EditRealServer):
        return CMD_SET_DEST, service_nest(op.virtual_server) + dest_nest(op.spec)
    if isinstance(op, DeleteRealServer):
        return CMD_DEL_DEST, service_nest(op.virtual_server) + dest_nest(op.key)
    raise TypeError(f"unknown operation {op!r}")  # pragma: no cover - exhaustive
