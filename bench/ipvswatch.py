"""A lean witness of the kernel's IPVS table for the benchmarks (stdlib only, raw generic netlink).

The benchmarks poll one virtual server's destinations many times a second while a daemon runs,
on the same two vCPUs, so the poll must be cheap: one GET_DEST dump, and the answer is searched
with bytes.find / re (C speed) instead of being parsed attribute by attribute.  This relies on
the order in which the kernel writes a destination (net/netfilter/ipvs/ip_vs_ctl.c,
ip_vs_genl_fill_dest): ADDR, PORT, FWD_METHOD, WEIGHT, ...; ``check()`` verifies it against
``ipvsadm -Ln`` once per run.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Iterable

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000

IPVS_CMD_GET_DEST = 8
IPVS_CMD_ATTR_SERVICE = 1
IPVS_SVC_ATTR_AF = 1
IPVS_SVC_ATTR_PROTOCOL = 2
IPVS_SVC_ATTR_ADDR = 3
IPVS_SVC_ATTR_PORT = 4

_HDR = struct.Struct("=IHHII")
# PORT (len 6, type 2, be16 + 2 pad) then FWD_METHOD (len 8, type 3, u32) then WEIGHT (type 4)
_DEST = re.compile(rb"\x06\x00\x02\x00(..)\x00\x00\x08\x00\x03\x00....\x08\x00\x04\x00(....)", re.S)


def nla(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


class IpvsWatch:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.family = self._family_id(b"IPVS\0")

    def close(self) -> None:
        self.sock.close()

    def _send(self, msg_type: int, flags: int, cmd: int, version: int, attrs: bytes) -> int:
        self.seq += 1
        body = struct.pack("=BBH", cmd, version, 0) + attrs
        self.sock.send(_HDR.pack(16 + len(body), msg_type, flags, self.seq, 0) + body)
        return self.seq

    def _receive(self, seq: int) -> list[bytes]:
        """Every reply message (header included) until DONE, or the ACK / error of a request."""
        out: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 20)
            pos = 0
            while pos + 16 <= len(data):
                length, kind, _flags, mseq, _pid = _HDR.unpack_from(data, pos)
                if mseq == seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, pos + 16)
                        if code:
                            raise OSError(-code, os.strerror(-code))
                        return out
                    out.append(data[pos : pos + length])
                pos += (length + 3) & ~3

    def _family_id(self, name: bytes) -> int:
        seq = self._send(
            GENL_ID_CTRL,
            NLM_F_REQUEST | NLM_F_ACK,
            CTRL_CMD_GETFAMILY,
            1,
            nla(CTRL_ATTR_FAMILY_NAME, name),
        )
        for msg in self._receive(seq):
            pos = 20
            while pos + 4 <= len(msg):
                length, kind = struct.unpack_from("=HH", msg, pos)
                if kind == CTRL_ATTR_FAMILY_ID:
                    return int(struct.unpack_from("=H", msg, pos + 4)[0])
                pos += (length + 3) & ~3
        raise OSError("IPVS generic netlink family not found")

    def dump_raw(self, vip: str, vport: int) -> list[bytes]:
        """The raw GET_DEST dump of the TCP virtual server vip:vport (one bytes per dest)."""
        svc = (
            nla(IPVS_SVC_ATTR_AF, struct.pack("=H", socket.AF_INET))
            + nla(IPVS_SVC_ATTR_PROTOCOL, struct.pack("=H", socket.IPPROTO_TCP))
            + nla(IPVS_SVC_ATTR_ADDR, socket.inet_aton(vip) + b"\0" * 12)
            + nla(IPVS_SVC_ATTR_PORT, struct.pack("!H", vport))
        )
        seq = self._send(
            self.family,
            NLM_F_REQUEST | NLM_F_DUMP,
            IPVS_CMD_GET_DEST,
            1,
            nla(IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, svc),
        )
        try:
            return self._receive(seq)
        except FileNotFoundError:  # ENOENT: no such virtual server (yet)
            return []

    def weights(self, vip: str, vport: int) -> dict[int, int]:
        """{port: weight} of every destination (one address per benchmark, so port is enough)."""
        blob = b"".join(self.dump_raw(vip, vport))
        return {
            struct.unpack("!H", m.group(1))[0]: struct.unpack("=I", m.group(2))[0]
            for m in _DEST.finditer(blob)
        }

    def weight_counts(self, vip: str, vport: int) -> tuple[int, int]:
        """(destinations, destinations with a weight > 0), counted at C speed."""
        msgs = self.dump_raw(vip, vport)
        blob = b"".join(msgs)
        zero = len(re.findall(rb"\x08\x00\x04\x00\x00\x00\x00\x00", blob))
        return len(msgs), len(msgs) - zero

    def weight_of(self, blob: bytes, port: int) -> int | None:
        """The weight of the destination with this port in a joined dump, None if absent."""
        at = blob.find(b"\x06\x00\x02\x00" + struct.pack("!H", port) + b"\x00\x00\x08\x00\x03\x00")
        if at < 0:
            return None
        return int(struct.unpack_from("=I", blob, at + 20)[0])


def check(watch: IpvsWatch, vip: str, vports: Iterable[int], ipvsadm_text: str) -> None:
    """Compare the fast reading of these virtual servers (every one in the table: the ports of
    their real servers are distinct) with ``ipvsadm -Ln`` output (raises AssertionError)."""
    expected: dict[int, int] = {}
    for line in ipvsadm_text.splitlines():
        parts = line.split()
        if parts and parts[0] == "->" and ":" in parts[1] and parts[1] != "RemoteAddress:Port":
            expected[int(parts[1].rsplit(":", 1)[1])] = int(parts[3])
    got: dict[int, int] = {}
    for vport in vports:
        got.update(watch.weights(vip, vport))
    assert got == expected, f"ipvswatch disagrees with ipvsadm: {len(got)} vs {len(expected)}"
