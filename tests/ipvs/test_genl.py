"""The raw generic netlink IPVS adapter, without a kernel.

Encoding: every request is decoded back with pyroute2's own IPVS message parser (an independent
implementation of the same wire format).  Decoding: dump messages encoded by pyroute2 are read
by our decoder, which must find the attributes pyroute2 wrote (the pyroute2 adapter reads the
messages pyroute2 receives with the same decoder, also when a datagram holds several).  The
socket protocol (sequence numbers, ACKs, errors, multi-part dumps, abandoned requests) runs
against a fake peer on a socketpair.  tests/kernel/test_genl_kernel.py runs the adapter against
the real kernel.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import Any

import pytest
from probing import LoopTurns
from pyroute2.netlink.generic import ipvs as genl_ipvs

from healthd.ipvs import dumps
from healthd.ipvs import genl_codec as c
from healthd.ipvs.errors import IpvsExists, IpvsNotFound
from healthd.ipvs.genl import GenlIpvs
from healthd.ipvs.genl_codec import request_for
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    DesiredRealServer,
    DesiredVirtualServer,
    EditRealServer,
    EditVirtualServer,
    Forwarding,
    ObservedRealServer,
    Protocol,
    RealServerKey,
    RealServerSpec,
    TrafficStats,
    VirtualServerKey,
    VirtualServerSpec,
)

VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
VS6 = VirtualServerKey.for_address(Protocol.UDP, "fd00:0:0:1::1", 53)
FWM = VirtualServerKey.for_fwmark(9, 6)
RS = RealServerSpec(RealServerKey("192.168.1.101", 8080), Forwarding.NAT, 7, 100, 10)
RS6 = RealServerSpec(RealServerKey("fd00:0:0:2::101", 53), Forwarding.DR, 2)
FAMILY = 0x20


def parsed(op: Any) -> Any:
    cmd, attrs = request_for(op)
    data = c.message(FAMILY, c.NLM_F_REQUEST | c.NLM_F_ACK, 1, cmd, attrs)
    msg = genl_ipvs.ipvsmsg(data)
    msg.decode()
    assert msg["cmd"] == cmd and msg["header"]["length"] == len(data)
    return msg


def test_service_requests_are_complete_and_read_back_by_pyroute2() -> None:
    msg = parsed(AddVirtualServer(VirtualServerSpec(VS, "wrr", persistence_timeout_s=300)))
    svc = msg.get("IPVS_CMD_ATTR_SERVICE")
    assert svc.get("IPVS_SVC_ATTR_AF") == socket.AF_INET
    assert svc.get("IPVS_SVC_ATTR_PROTOCOL") == socket.IPPROTO_TCP
    assert svc.get("IPVS_SVC_ATTR_ADDR") == "10.0.0.1"
    assert svc.get("IPVS_SVC_ATTR_PORT") == 80
    assert svc.get("IPVS_SVC_ATTR_SCHED_NAME") == "wrr"
    assert svc.get("IPVS_SVC_ATTR_TIMEOUT") == 300
    flags = svc.get("IPVS_SVC_ATTR_FLAGS")
    assert (flags["flags"], flags["mask"]) == (1, 1)  # only the persistent bit is touched
    assert svc.get("IPVS_SVC_ATTR_NETMASK") == "255.255.255.255"
    edit = parsed(EditVirtualServer(VirtualServerSpec(VS, "rr"))).get("IPVS_CMD_ATTR_SERVICE")
    flags = edit.get("IPVS_SVC_ATTR_FLAGS")
    assert (flags["flags"], flags["mask"], edit.get("IPVS_SVC_ATTR_TIMEOUT")) == (0, 1, 0)


def test_ipv6_and_fwmark_service_keys() -> None:
    msg = parsed(AddVirtualServer(VirtualServerSpec(VS6, "rr")))
    svc = msg.get("IPVS_CMD_ATTR_SERVICE")
    assert svc.get("IPVS_SVC_ATTR_AF") == socket.AF_INET6
    assert svc.get("IPVS_SVC_ATTR_ADDR") == "fd00:0:0:1::1"
    assert svc.get("IPVS_SVC_ATTR_PROTOCOL") == socket.IPPROTO_UDP
    raw = socket.inet_aton(svc.get("IPVS_SVC_ATTR_NETMASK"))  # pyroute2 reads it as IPv4
    assert struct.unpack("=I", raw)[0] == 128  # the prefix length, as the kernel reads it
    fwm = parsed(DeleteVirtualServer(FWM)).get("IPVS_CMD_ATTR_SERVICE")
    assert fwm.get("IPVS_SVC_ATTR_FWMARK") == 9
    assert fwm.get("IPVS_SVC_ATTR_AF") == socket.AF_INET6
    assert fwm.get("IPVS_SVC_ATTR_ADDR") is None and fwm.get("IPVS_SVC_ATTR_SCHED_NAME") is None


@pytest.mark.parametrize("op_type", [AddRealServer, EditRealServer])
def test_dest_requests_carry_every_attribute(op_type: Any) -> None:
    """A weight change of a NAT real server must say NAT: SET_DEST replaces what it carries."""
    msg = parsed(op_type(VS, RS))
    assert msg.get("IPVS_CMD_ATTR_SERVICE").get("IPVS_SVC_ATTR_PORT") == 80
    dest = msg.get("IPVS_CMD_ATTR_DEST")
    assert dest.get("IPVS_DEST_ATTR_ADDR") == "192.168.1.101"
    assert dest.get("IPVS_DEST_ATTR_PORT") == 8080
    assert dest.get("IPVS_DEST_ATTR_FWD_METHOD") == 0  # masquerading
    assert dest.get("IPVS_DEST_ATTR_WEIGHT") == 7
    assert dest.get("IPVS_DEST_ATTR_U_THRESH") == 100
    assert dest.get("IPVS_DEST_ATTR_L_THRESH") == 10
    assert dest.get("IPVS_DEST_ATTR_ADDR_FAMILY") == socket.AF_INET


@pytest.mark.parametrize(
    ("forwarding", "code"), [(Forwarding.NAT, 0), (Forwarding.TUNNEL, 2), (Forwarding.DR, 3)]
)
def test_forwarding_codes(forwarding: Forwarding, code: int) -> None:
    spec = RealServerSpec(RealServerKey("192.168.1.101", 80), forwarding, 1)
    dest = parsed(EditRealServer(VS, spec)).get("IPVS_CMD_ATTR_DEST")
    assert dest.get("IPVS_DEST_ATTR_FWD_METHOD") == code


def test_delete_dest_carries_only_the_key() -> None:
    dest = parsed(DeleteRealServer(VS6, RS6.key)).get("IPVS_CMD_ATTR_DEST")
    assert dest.get("IPVS_DEST_ATTR_ADDR") == "fd00:0:0:2::101"
    assert dest.get("IPVS_DEST_ATTR_PORT") == 53
    assert dest.get("IPVS_DEST_ATTR_WEIGHT") is None


STATS = {
    f"IPVS_STATS_ATTR_{name}": value
    for name, value in zip(
        ["CONNS", "INPKTS", "OUTPKTS", "INBYTES", "OUTBYTES", "CPS", "INPPS", "OUTPPS", "INBPS"],
        [30, 180, 170, 2**40 + 5, 9000, 3, 12, 11, 800],
        strict=True,
    )
} | {"IPVS_STATS_ATTR_OUTBPS": 700}


def dump_message(cmd: int, attrs: list[tuple[str, Any]]) -> Any:
    """A dump answer as the kernel would send it, encoded by pyroute2."""
    msg = genl_ipvs.ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    msg.encode()
    parsed = genl_ipvs.ipvsmsg(msg.data)
    parsed.decode()
    return msg.data, parsed


def stats_nla() -> dict[str, Any]:
    return {"attrs": list(STATS.items())}


STATS_VALUES = TrafficStats(30, 180, 170, 2**40 + 5, 9000, 3, 12, 11, 800, 700)


def dest_attrs(af: int, addr: str, fwd: int, weight: int) -> list[tuple[str, Any]]:
    return [
        ("IPVS_DEST_ATTR_ADDR", addr),
        ("IPVS_DEST_ATTR_PORT", 8080),
        ("IPVS_DEST_ATTR_FWD_METHOD", fwd),
        ("IPVS_DEST_ATTR_WEIGHT", weight),
        ("IPVS_DEST_ATTR_U_THRESH", 9),
        ("IPVS_DEST_ATTR_L_THRESH", 4),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", 12),
        ("IPVS_DEST_ATTR_INACT_CONNS", 34),
        ("IPVS_DEST_ATTR_PERSIST_CONNS", 2),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", af),
        ("IPVS_DEST_ATTR_STATS64", stats_nla()),
    ]


def written(addr: str, fwd: int, weight: int) -> ObservedRealServer:
    """What dest_attrs wrote, as healthd's value."""
    forwarding = {0: Forwarding.NAT, 2: Forwarding.TUNNEL, 3: Forwarding.DR}[fwd]
    spec = RealServerSpec(RealServerKey(addr, 8080), forwarding, weight, 9, 4)
    return ObservedRealServer(spec, 12, 34, 2, STATS_VALUES)


@pytest.mark.parametrize(
    ("af", "addr", "fwd", "weight"),
    [(socket.AF_INET, "192.168.1.101", 0, 5), (socket.AF_INET6, "fd00:0:0:2::101", 3, 0)],
)
def test_dest_dump_decodes_what_pyroute2_encoded(af: int, addr: str, fwd: int, weight: int) -> None:
    attrs = dest_attrs(af, addr, fwd, weight)
    data, _ = dump_message(c.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": attrs})])
    assert c.decode_dest(data, af) == written(addr, fwd, weight)


def test_a_datagram_of_dump_answers_splits_into_its_messages() -> None:
    """How both adapters read a dump's datagrams (the pyroute2 adapter gets them from pyroute2's
    queue): each message whole, in order, until the end of the dump."""
    parts = []
    for addr, fwd, weight in (("10.1.0.1", 0, 1), ("10.1.0.2", 3, 7)):
        data, _ = dump_message(
            c.CMD_NEW_DEST,
            [("IPVS_CMD_ATTR_DEST", {"attrs": dest_attrs(socket.AF_INET, addr, fwd, weight)})],
        )
        data = bytearray(data)
        struct.pack_into("=IHHII", data, 0, len(data), 42, c.NLM_F_MULTI, 7, 99)
        parts.append(bytes(data) + bytes(-len(data) % 4))  # each message padded to 4 bytes
    done = struct.pack("=IHHIIi", 20, c.NLMSG_DONE, c.NLM_F_MULTI, 7, 99, 0)
    answer = c.Answer(7)
    assert answer.feed(b"".join([*parts, done]))
    assert answer.error == 0
    assert [msg + bytes(-len(msg) % 4) for msg in answer.messages] == parts
    assert [c.decode_dest(msg, socket.AF_INET) for msg in answer.messages] == [
        written("10.1.0.1", 0, 1),
        written("10.1.0.2", 3, 7),
    ]


@pytest.mark.parametrize("persistent", [True, False])
def test_service_dump_decodes_what_pyroute2_encoded(persistent: bool) -> None:
    attrs = [
        ("IPVS_SVC_ATTR_AF", socket.AF_INET6),
        ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_UDP),
        ("IPVS_SVC_ATTR_ADDR", "fd00:0:0:1::1"),
        ("IPVS_SVC_ATTR_PORT", 53),
        ("IPVS_SVC_ATTR_SCHED_NAME", "wrr"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": 1 if persistent else 0, "mask": 0xFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", 360),
        ("IPVS_SVC_ATTR_STATS64", stats_nla()),
    ]
    data, _ = dump_message(c.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": attrs})])
    key = VirtualServerKey.for_address(Protocol.UDP, "fd00:0:0:1::1", 53)
    expected = VirtualServerSpec(key, "wrr", 360 if persistent else 0)
    assert c.decode_service(data) == (expected, STATS_VALUES)


def test_fwmark_service_dump() -> None:
    attrs = [
        ("IPVS_SVC_ATTR_AF", socket.AF_INET),
        ("IPVS_SVC_ATTR_FWMARK", 9),
        ("IPVS_SVC_ATTR_SCHED_NAME", "sh"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": 0, "mask": 0xFFFF}),
    ]
    data, _ = dump_message(c.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": attrs})])
    spec, _ = c.decode_service(data)
    assert spec == VirtualServerSpec(VirtualServerKey.for_fwmark(9, 4), "sh")


def test_an_answer_takes_its_own_messages_until_the_end_or_an_error() -> None:
    """What both adapters read a request's answer with, datagram by datagram."""
    late = c.NLMSGHDR.pack(20, 42, c.NLM_F_MULTI, 6, 0) + b"late"  # an abandoned request's
    ours = [c.NLMSGHDR.pack(20, 42, c.NLM_F_MULTI, 7, 0) + bytes([n]) * 4 for n in (1, 2)]
    done = struct.pack("=IHHIIi", 20, c.NLMSG_DONE, c.NLM_F_MULTI, 7, 0, 0)
    answer = c.Answer(7)
    assert not answer.feed(late + ours[0]) and answer.error is None
    assert answer.feed(ours[1] + done)
    assert (answer.error, list(answer.messages)) == (0, ours)
    refused = c.Answer(8)
    assert refused.feed(struct.pack("=IHHIIi", 36, c.NLMSG_ERROR, 0, 8, 0, -17) + bytes(16))
    assert (refused.error, list(refused.messages)) == (17, [])
    acked = c.Answer(9)
    assert acked.feed(struct.pack("=IHHIIi", 36, c.NLMSG_ERROR, 0, 9, 0, 0) + bytes(16))
    assert acked.error == 0


def test_a_large_answer_holds_its_datagrams_not_a_copy_of_each_message() -> None:
    """A dump of thousands of real servers on every pass: its messages are cut from the
    datagrams as they are read, one at a time, not all kept as objects of their own."""
    ours = [c.NLMSGHDR.pack(24, 42, c.NLM_F_MULTI, 7, 0) + n.to_bytes(8) for n in range(2000)]
    datagrams = [b"".join(ours[i : i + 100]) for i in range(0, 2000, 100)]
    answer = c.Answer(7)
    before = sys.getallocatedblocks()
    for data in datagrams:
        assert not answer.feed(data)
    assert answer.feed(struct.pack("=IHHIIi", 20, c.NLMSG_DONE, c.NLM_F_MULTI, 7, 0, 0))
    assert sys.getallocatedblocks() - before < 100  # not 2 000
    assert [msg[16:] for msg in answer.messages] == [n.to_bytes(8) for n in range(2000)]


# ---- the socket protocol, against a fake kernel on a socketpair ------------------------------


def reply(seq: int, kind: int, payload: bytes, flags: int = 0) -> bytes:
    return c.NLMSGHDR.pack(16 + len(payload), kind, flags, seq, 0) + payload


def ack(seq: int, code: int = 0) -> bytes:
    return reply(seq, c.NLMSG_ERROR, struct.pack("=i", -code) + b"\0" * 16)


class FakeKernel:
    """Reads requests from one end of a socketpair; answers with what the test scripts."""

    def __init__(self) -> None:
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        self.adapter = GenlIpvs()
        self.adapter._sock = ours
        self.adapter._family = FAMILY

    def request(self) -> tuple[int, int]:
        data = self.peer.recv(65536)
        _size, kind, _flags, seq, _pid = c.NLMSGHDR.unpack_from(data, 0)
        assert kind == FAMILY
        return seq, data[16]

    def close(self) -> None:
        self.peer.close()
        self.adapter._reset()


async def test_requests_are_acknowledged_and_errors_mapped() -> None:
    kernel = FakeKernel()
    try:
        task = asyncio.create_task(kernel.adapter.apply(EditRealServer(VS, RS)))
        await asyncio.sleep(0.01)
        seq, cmd = kernel.request()
        assert cmd == c.CMD_SET_DEST
        kernel.peer.send(ack(seq - 1, 17) + ack(seq))  # a stale answer first: skipped
        await asyncio.wait_for(task, 1)
        task = asyncio.create_task(kernel.adapter.apply(AddRealServer(VS, RS)))
        await asyncio.sleep(0.01)
        seq, cmd = kernel.request()
        kernel.peer.send(ack(seq, 17))
        with pytest.raises(IpvsExists):
            await asyncio.wait_for(task, 1)
        task = asyncio.create_task(kernel.adapter.apply(DeleteRealServer(VS, RS.key)))
        await asyncio.sleep(0.01)
        seq, cmd = kernel.request()
        kernel.peer.send(ack(seq, 2))
        with pytest.raises(IpvsNotFound):
            await asyncio.wait_for(task, 1)
        assert kernel.adapter._sock is not None  # an error answer keeps the socket
    finally:
        kernel.close()


async def test_a_dump_in_several_datagrams_until_done() -> None:
    kernel = FakeKernel()
    try:
        task = asyncio.create_task(kernel.adapter._request(c.CMD_GET_DEST, c.NLM_F_DUMP, b"", "x"))
        await asyncio.sleep(0.01)
        seq, cmd = kernel.request()
        assert cmd == c.CMD_GET_DEST
        part = c.GENLHDR.pack(c.CMD_NEW_DEST, 1, 0)
        kernel.peer.send(reply(seq, FAMILY, part, c.NLM_F_MULTI) * 2)
        await asyncio.sleep(0.01)
        assert not task.done()
        kernel.peer.send(reply(seq, FAMILY, part, c.NLM_F_MULTI) + reply(seq, c.NLMSG_DONE, b""))
        assert len(list(await asyncio.wait_for(task, 1))) == 3
    finally:
        kernel.close()


async def test_an_abandoned_request_drops_the_socket() -> None:
    kernel = FakeKernel()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(kernel.adapter.apply(EditRealServer(VS, RS)), 0.05)
        assert kernel.adapter._sock is None  # the next request starts on a fresh socket
    finally:
        kernel.close()


def service_message() -> bytes:
    """The dump answer for VS (10.0.0.1:80 TCP, wrr), as pyroute2 encodes it."""
    svc_attrs = [
        ("IPVS_SVC_ATTR_AF", socket.AF_INET),
        ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_TCP),
        ("IPVS_SVC_ATTR_ADDR", "10.0.0.1"),
        ("IPVS_SVC_ATTR_PORT", 80),
        ("IPVS_SVC_ATTR_SCHED_NAME", "wrr"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": 0, "mask": 0xFFFF}),
    ]
    data, _ = dump_message(c.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": svc_attrs})])
    return bytes(data)


def dest_message(weight: int, port: int = 80) -> bytes:
    """The dump answer for real server 192.168.1.101:port, as pyroute2 encodes it."""
    attrs = [
        ("IPVS_DEST_ATTR_ADDR", "192.168.1.101"),
        ("IPVS_DEST_ATTR_PORT", port),
        ("IPVS_DEST_ATTR_FWD_METHOD", 0),
        ("IPVS_DEST_ATTR_WEIGHT", weight),
        ("IPVS_DEST_ATTR_U_THRESH", 0),
        ("IPVS_DEST_ATTR_L_THRESH", 0),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET),
    ]
    data, _ = dump_message(c.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": attrs})])
    return bytes(data)


async def test_a_dump_of_many_unchanged_real_servers_lets_the_loop_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dump gives the event loop back between slices even when nothing is decoded (every real
    server unchanged): the look-ups of 20 000 of them are ~10 ms, and the probes due wait."""
    monkeypatch.setattr(dumps, "SLICE_WORK", 8)
    dests = [dest_message(1, port) for port in range(1000, 1040)]

    async def request(cmd: int, attrs: bytes, what: str) -> list[bytes]:
        return [service_message()] if cmd == c.CMD_GET_SERVICE else dests

    reader = dumps.TableReader()
    first = await reader.read([VS], request)  # every message decoded
    async with LoopTurns() as turns:
        second = await reader.read([VS], request)  # none decoded: all unchanged
    assert second[VS].real_servers == first[VS].real_servers
    assert len(second[VS].real_servers) == 40
    assert turns.count >= 40 // 8 - 1  # a turn of the loop every 8 messages looked up


async def test_an_unchanged_destination_is_not_decoded_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = service_message()
    dest = dest_message

    decoded: list[int] = []
    real_decode = c.decode_dest

    def counting(msg: bytes, af: int) -> Any:
        decoded.append(1)
        return real_decode(msg, af)

    monkeypatch.setattr(c, "decode_dest", counting)
    kernel = FakeKernel()

    def answer(payload: bytes) -> None:
        seq, _cmd = kernel.request()
        body = bytes(payload)[16:]
        kernel.peer.send(reply(seq, FAMILY, body, c.NLM_F_MULTI) + reply(seq, c.NLMSG_DONE, b""))

    async def dump(weight: int) -> Any:
        task = asyncio.create_task(kernel.adapter.dump([VS]))
        await asyncio.sleep(0.01)
        answer(bytes(service))
        await asyncio.sleep(0.01)
        answer(dest(weight))
        return (await asyncio.wait_for(task, 1))[VS].real_servers[
            RS.key.__class__("192.168.1.101", 80)
        ]

    try:
        first = await dump(1)
        second = await dump(1)
        assert second is first and len(decoded) == 1  # the same bytes: reused
        third = await dump(0)
        assert third.spec.weight == 0 and len(decoded) == 2  # changed: decoded
    finally:
        kernel.close()


async def test_a_dump_read_with_the_desired_table_at_hand_gives_the_kernels_values() -> None:
    """With the desired table passed along, a real server the kernel holds as desired shares
    the desired spec (one copy of it at 10 000 real servers, not two); one the kernel holds
    otherwise keeps the kernel's weight, sharing only the key."""
    as_desired = RealServerSpec(RealServerKey("192.168.1.101", 1000), Forwarding.NAT, 1)
    otherwise = RealServerSpec(RealServerKey("192.168.1.101", 1001), Forwarding.NAT, 0)
    like = {
        VS: DesiredVirtualServer(
            VirtualServerSpec(VS, "wrr"),
            {s.key: DesiredRealServer(s) for s in (as_desired, otherwise)},
        )
    }
    dests = [dest_message(1, 1000), dest_message(1, 1001)]  # the kernel: both of weight 1

    async def request(cmd: int, attrs: bytes, what: str) -> list[bytes]:
        return [service_message()] if cmd == c.CMD_GET_SERVICE else dests

    shared = (await dumps.TableReader().read([VS], request, like))[VS].real_servers
    alone = (await dumps.TableReader().read([VS], request))[VS].real_servers
    assert shared == alone  # the same table, with or without the desired one
    assert shared[otherwise.key].spec.weight == 1  # the kernel's, not the desired 0
    assert shared[as_desired.key].spec is as_desired
    assert shared[otherwise.key].spec.key is otherwise.key


@pytest.mark.parametrize("spec", [RS, RS6])
def test_the_packed_dest_is_the_attribute_by_attribute_encoding(spec: RealServerSpec) -> None:
    af = socket.AF_INET6 if ":" in spec.key.address else socket.AF_INET
    addr = socket.inet_pton(af, spec.key.address) + b"\0" * (
        16 - (4 if af == socket.AF_INET else 16)
    )
    attrs = (
        c.nla(c.DEST_ADDR, addr)
        + c.nla(c.DEST_PORT, struct.pack("!H", spec.key.port))
        + c.nla(c.DEST_ADDR_FAMILY, struct.pack("=H", af))
        + c.nla(c.DEST_FWD_METHOD, struct.pack("=I", c.FWD_TO_KERNEL[spec.forwarding]))
        + c.nla(c.DEST_WEIGHT, struct.pack("=I", spec.weight))
        + c.nla(c.DEST_U_THRESH, struct.pack("=I", spec.upper_threshold))
        + c.nla(c.DEST_L_THRESH, struct.pack("=I", spec.lower_threshold))
        + c.nla(c.DEST_TUN_TYPE, b"\0")
        + c.nla(c.DEST_TUN_PORT, b"\0\0")
        + c.nla(c.DEST_TUN_FLAGS, b"\0\0")
    )
    assert c.dest_nest(spec) == c.nla(c.CMD_ATTR_DEST | c.NLA_F_NESTED, attrs)
