"""The netlink adapter's requests, checked without a kernel: each pyroute2 trap has a guard here.

The same adapter is run against the real kernel in tests/kernel (inside the VM test bed).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pyroute2.netlink.generic import ipvs as genl_ipvs

from healthd.ipvs import genl_codec, netlink
from healthd.ipvs.errors import IpvsExists, IpvsNotFound, IpvsTransient
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    EditRealServer,
    EditVirtualServer,
    Forwarding,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
)

VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
VS6 = VirtualServerKey.for_address(Protocol.TCP, "fd00::1", 80)
RS = RealServerSpec(RealServerKey("192.168.1.101", 80), Forwarding.NAT, 0)


def _as_pyroute2_sends(msg: Any, family: int = 42, flags: int = 5, seq: int = 7) -> bytes:
    """The bytes pyroute2 sends for ``msg``: its request fills the header in, then encodes."""
    msg["header"]["type"] = family
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 1234
    msg.reset()
    msg.encode()
    return bytes(msg.data)


def _read_back(data: bytes) -> Any:
    parsed = genl_ipvs.ipvsmsg(data)
    parsed.decode()
    return parsed


def test_a_request_is_the_codecs_payload_behind_pyroute2s_header() -> None:
    op = EditRealServer(VS, RS)
    cmd, attrs = genl_codec.request_for(op)
    data = _as_pyroute2_sends(netlink.encoded_request(cmd, attrs))
    expected = genl_codec.message(42, 5, 7, cmd, attrs)
    assert data[:12] == expected[:12] and data[16:] == expected[16:]
    assert struct.unpack_from("=I", data, 12)[0] == 1234  # the port id pyroute2 chose


def test_weight_change_of_a_nat_real_server_stays_nat_on_the_wire() -> None:
    """SET_DEST replaces every attribute it receives: the dest we send is complete (pyroute2's
    IPVSDest defaulted to DR)."""
    cmd, attrs = genl_codec.request_for(EditRealServer(VS, RS))
    sent = _read_back(_as_pyroute2_sends(netlink.encoded_request(cmd, attrs)))
    assert sent["cmd"] == genl_ipvs.IPVS_CMD_SET_DEST
    dest = sent.get("IPVS_CMD_ATTR_DEST")
    assert dest.get("IPVS_DEST_ATTR_FWD_METHOD") == 0  # masquerading, not 3 (route)
    assert dest.get("IPVS_DEST_ATTR_WEIGHT") == 0
    assert dest.get("IPVS_DEST_ATTR_U_THRESH") == 0
    assert dest.get("IPVS_DEST_ATTR_L_THRESH") == 0
    service = sent.get("IPVS_CMD_ATTR_SERVICE")
    assert service.get("IPVS_SVC_ATTR_PORT") == 80


def test_service_requests_carry_scheduler_timeout_and_only_the_persistent_flag() -> None:
    """IPVSService's defaults (wlc, flags mask 0xffff) never reach the kernel."""
    spec = VirtualServerSpec(VS, scheduler="rr", persistence_timeout_s=300)
    cmd, attrs = genl_codec.request_for(EditVirtualServer(spec))
    svc = _read_back(_as_pyroute2_sends(netlink.encoded_request(cmd, attrs))).get(
        "IPVS_CMD_ATTR_SERVICE"
    )
    assert svc.get("IPVS_SVC_ATTR_SCHED_NAME") == "rr"
    assert svc.get("IPVS_SVC_ATTR_TIMEOUT") == 300
    flags = svc.get("IPVS_SVC_ATTR_FLAGS")
    assert (flags["flags"], flags["mask"]) == (1, 1)
    assert svc.get("IPVS_SVC_ATTR_PROTOCOL") == socket.IPPROTO_TCP


class RecordingSocket:
    """Stands in for pyroute2's AsyncIPVS socket: records the requests as pyroute2 would send
    them, and how many were in flight at once."""

    prid = 42

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[int, int, Any]] = []
        self.fail_with = fail_with
        self.answers: dict[int, list[Any]] = {}  # command -> the messages the kernel answers
        self.active = 0
        self.max_active = 0
        self.closed = False

    async def nlm_request(self, msg: Any, msg_type: int, msg_flags: int) -> AsyncIterator[Any]:
        sent = _read_back(_as_pyroute2_sends(msg, msg_type, msg_flags))
        self.calls.append((sent["cmd"], msg_flags, sent))
        return self._answer(sent["cmd"])

    async def _answer(self, cmd: int) -> AsyncIterator[Any]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0.002)  # the kernel's turn: another request could start now
            if self.fail_with is not None:
                raise self.fail_with
            for answer in self.answers.get(cmd, []):
                yield answer
        finally:
            self.active -= 1

    def close(self) -> None:
        self.closed = True


def _adapter(sock: RecordingSocket) -> netlink.NetlinkIpvs:
    adapter = netlink.NetlinkIpvs()
    adapter._socket = sock
    return adapter


async def test_adapter_names_each_command_never_update() -> None:
    """pyroute2's "update" verb was DEL_*: the adapter names the command itself."""
    sock = RecordingSocket()
    adapter = _adapter(sock)
    await adapter.apply(AddVirtualServer(VirtualServerSpec(VS, "rr")))
    await adapter.apply(EditVirtualServer(VirtualServerSpec(VS, "wrr")))
    await adapter.apply(AddRealServer(VS, RS))
    await adapter.apply(EditRealServer(VS, RS))
    await adapter.apply(DeleteRealServer(VS, RS.key))
    await adapter.close()
    assert [cmd for cmd, _, _ in sock.calls] == [
        genl_ipvs.IPVS_CMD_NEW_SERVICE,
        genl_ipvs.IPVS_CMD_SET_SERVICE,
        genl_ipvs.IPVS_CMD_NEW_DEST,
        genl_ipvs.IPVS_CMD_SET_DEST,
        genl_ipvs.IPVS_CMD_DEL_DEST,
    ]
    assert all(
        flags == genl_codec.NLM_F_REQUEST | genl_codec.NLM_F_ACK for _, flags, _ in sock.calls
    )
    edit = sock.calls[3][2].get("IPVS_CMD_ATTR_DEST")
    assert edit.get("IPVS_DEST_ATTR_FWD_METHOD") == 0 and edit.get("IPVS_DEST_ATTR_WEIGHT") == 0


async def test_adapter_keeps_one_request_in_flight() -> None:
    """Trap 4: many requests in flight on one socket overflow it; the adapter serialises them."""
    sock = RecordingSocket()
    adapter = _adapter(sock)
    ops = [EditRealServer(VS, RS) for _ in range(50)]
    await asyncio.gather(*(adapter.apply(op) for op in ops))
    await adapter.close()
    assert len(sock.calls) == 50
    assert sock.max_active == 1


async def test_kernel_errors_are_mapped_and_a_broken_socket_is_replaced() -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    sock = RecordingSocket(fail_with=NetlinkError(17, "File exists"))
    adapter = _adapter(sock)
    with pytest.raises(IpvsExists):
        await adapter.apply(AddRealServer(VS, RS))
    sock.fail_with = NetlinkError(2, "No such file or directory")
    with pytest.raises(IpvsNotFound):
        await adapter.apply(DeleteRealServer(VS, RS.key))
    sock.fail_with = OSError(105, "No buffer space available")
    with pytest.raises(IpvsTransient):
        await adapter.apply(EditRealServer(VS, RS))
    assert sock.closed  # ENOBUFS: the socket is dropped, the next request opens a new one
    assert adapter._socket is None
    await adapter.close()


def _received(op: Any) -> Any:
    """A message as pyroute2 hands it over: parsed from the bytes the kernel sent (a dump answer
    carries the same attributes as the request that made the entry)."""
    cmd, attrs = genl_codec.request_for(op)
    return _read_back(genl_codec.message(42, 2, 1, cmd, attrs))


async def test_a_dump_reads_our_virtual_servers_and_their_real_servers_only() -> None:
    sock = RecordingSocket()
    other = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.2", 80)
    sock.answers[genl_ipvs.IPVS_CMD_GET_SERVICE] = [
        _received(AddVirtualServer(VirtualServerSpec(VS, "wrr"))),
        _received(AddVirtualServer(VirtualServerSpec(other, "rr"))),
    ]
    rs2 = RealServerSpec(RealServerKey("192.168.1.102", 8080), Forwarding.DR, 7)
    sock.answers[genl_ipvs.IPVS_CMD_GET_DEST] = [
        _received(AddRealServer(VS, RS)),
        _received(AddRealServer(VS, rs2)),
    ]
    observed = await _adapter(sock).dump([VS])
    assert list(observed) == [VS]  # the other virtual server is not read further
    assert observed[VS].spec.scheduler == "wrr"
    assert {k: rs.spec for k, rs in observed[VS].real_servers.items()} == {
        RS.key: RS,
        rs2.key: rs2,
    }
    assert [cmd for cmd, _, _ in sock.calls] == [
        genl_ipvs.IPVS_CMD_GET_SERVICE,
        genl_ipvs.IPVS_CMD_GET_DEST,
    ]
    assert all(flags & genl_codec.NLM_F_DUMP == genl_codec.NLM_F_DUMP for _, flags, _ in sock.calls)


async def test_an_abandoned_request_drops_the_socket() -> None:
    """The reconciler's timeout cancels a request half-way: its answer must not be read as the
    next request's, so the socket goes and the next request opens a new one."""
    sock = RecordingSocket()
    adapter = _adapter(sock)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.0005):
            await adapter.apply(EditRealServer(VS, RS))
    assert sock.closed and adapter._socket is None


async def test_a_second_dump_sees_what_changed_in_the_kernel() -> None:
    """Unchanged real servers are not decoded again; a changed one is."""
    sock = RecordingSocket()
    adapter = _adapter(sock)
    sock.answers[genl_ipvs.IPVS_CMD_GET_SERVICE] = [
        _received(AddVirtualServer(VirtualServerSpec(VS, "wrr")))
    ]
    other = RealServerSpec(RealServerKey("192.168.1.103", 80), Forwarding.NAT, 3)
    sock.answers[genl_ipvs.IPVS_CMD_GET_DEST] = [
        _received(AddRealServer(VS, RS)),
        _received(AddRealServer(VS, other)),
    ]
    first = await adapter.dump([VS])
    reweighted = RealServerSpec(RS.key, RS.forwarding, 9)
    sock.answers[genl_ipvs.IPVS_CMD_GET_DEST] = [
        _received(AddRealServer(VS, reweighted)),
        _received(AddRealServer(VS, other)),
    ]
    second = await adapter.dump([VS])
    assert first[VS].real_servers[RS.key].spec.weight == 0
    assert second[VS].real_servers[RS.key].spec == reweighted
    assert second[VS].real_servers[other.key] is first[VS].real_servers[other.key]  # reused
