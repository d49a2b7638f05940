"""The netlink adapter's requests, checked without a kernel: each pyroute2 trap has a guard here,
and the adapter's use of pyroute2's socket (sequence numbers, the answer queue) is exercised
against a stand-in.

The same adapter is run against the real kernel in tests/kernel (inside the VM test bed).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
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


def _read_back(data: bytes) -> Any:
    """A request as the kernel (and pyroute2's own parser) reads it."""
    parsed = genl_ipvs.ipvsmsg(data)
    parsed.decode()
    return parsed


def _sent(op: Any) -> Any:
    cmd, attrs = genl_codec.request_for(op)
    return _read_back(genl_codec.message(42, 5, 7, cmd, attrs))


def test_weight_change_of_a_nat_real_server_stays_nat_on_the_wire() -> None:
    """SET_DEST replaces every attribute it receives: the dest we send is complete (pyroute2's
    IPVSDest defaulted to DR)."""
    sent = _sent(EditRealServer(VS, RS))
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
    svc = _sent(EditVirtualServer(spec)).get("IPVS_CMD_ATTR_SERVICE")
    assert svc.get("IPVS_SVC_ATTR_SCHED_NAME") == "rr"
    assert svc.get("IPVS_SVC_ATTR_TIMEOUT") == 300
    flags = svc.get("IPVS_SVC_ATTR_FLAGS")
    assert (flags["flags"], flags["mask"]) == (1, 1)
    assert svc.get("IPVS_SVC_ATTR_PROTOCOL") == socket.IPPROTO_TCP


class _AddrPool:
    def __init__(self) -> None:
        self.next = 100
        self.freed: list[int] = []

    def alloc(self) -> int:
        self.next += 1
        return self.next

    def free(self, addr: int, ban: int = 0) -> None:
        self.freed.append(addr)


class _Queues:
    """pyroute2's message queue: the datagrams answering each sequence number."""

    def __init__(self) -> None:
        self.queues: dict[int, asyncio.Queue[bytes]] = {}

    def ensure_tag(self, tag: int) -> None:
        self.queues.setdefault(tag, asyncio.Queue())

    async def get(self, tag: int) -> bytes:
        return await self.queues[tag].get()

    def free_tag(self, tag: int) -> None:
        del self.queues[tag]

    def put(self, tag: int, data: bytes) -> None:
        if tag in self.queues:
            self.queues[tag].put_nowait(data)


class RecordingSocket:
    """Stands in for pyroute2's AsyncIPVS socket (the parts the adapter uses: the family, the
    address pool, the message queue, send, recv): records each request as the kernel reads it,
    and answers like the kernel in datagrams.

    ``at_once`` (the real kernel): the answer's first datagram is on the socket when send()
    returns, for recv(); the rest (a dump's second datagram) reaches pyroute2's queue, as if
    its reader had taken it.  Otherwise every datagram comes through the queue a moment later
    (recv finds nothing), routed by sequence number."""

    prid = 42

    def __init__(self, fail_with: int | OSError | None = None, at_once: bool = False) -> None:
        self.calls: list[tuple[int, int, Any]] = []
        self.fail_with = fail_with  # an errno the kernel answers with, or an OSError on send
        self.answers: dict[int, list[bytes]] = {}  # command -> the messages the kernel answers
        self.addr_pool = _AddrPool()
        self.msg_queue = _Queues()
        self.at_once = at_once
        self.buffer: list[bytes] = []  # datagrams on the socket, for recv
        self.received = 0  # datagrams read by recv
        self.active = 0
        self.max_active = 0
        self.closed = False

    def send(self, data: bytes) -> int:
        if isinstance(self.fail_with, OSError):
            raise self.fail_with
        size, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data)
        assert size == len(data) and kind == self.prid
        sent = _read_back(data)
        self.calls.append((sent["cmd"], flags, sent))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self.at_once:
            self._answer(sent["cmd"], flags, seq)
        else:
            asyncio.get_running_loop().call_later(0.002, self._answer, sent["cmd"], flags, seq)
        return len(data)

    def recv(self, size: int) -> bytes:
        if not self.buffer:
            raise BlockingIOError
        self.received += 1
        return self.buffer.pop(0)

    def _answer(self, cmd: int, flags: int, seq: int) -> None:
        """The kernel's turn (another request could have started meanwhile)."""
        self.active -= 1
        first = self.buffer.append if self.at_once else functools.partial(self.msg_queue.put, seq)
        if isinstance(self.fail_with, int):
            first(_error(seq, self.fail_with))
            return
        if flags & genl_codec.NLM_F_DUMP:
            messages = [_with_seq(m, seq) for m in self.answers.get(cmd, [])]
            # two datagrams, as a large dump is: the end of the dump comes in the second
            half = len(messages) // 2
            first(b"".join(messages[:half]))
            later = b"".join(messages[half:]) + _done(seq)
            asyncio.get_running_loop().call_later(0.002, self.msg_queue.put, seq, later)
        else:
            first(_error(seq, 0))  # the ACK

    def close(self) -> None:
        self.closed = True


def _with_seq(message: bytes, seq: int) -> bytes:
    data = bytearray(message)
    struct.pack_into("=I", data, 8, seq)
    return bytes(data)


def _error(seq: int, code: int) -> bytes:
    """NLMSG_ERROR: 0 is an ACK; the request's header follows the (negative) errno."""
    return struct.pack("=IHHIIi", 36, genl_codec.NLMSG_ERROR, 0, seq, 0, -code) + bytes(16)


def _done(seq: int) -> bytes:
    return struct.pack("=IHHIIi", 20, genl_codec.NLMSG_DONE, genl_codec.NLM_F_MULTI, seq, 0, 0)


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


@pytest.mark.parametrize("at_once", [False, True], ids=["queued", "on-the-socket"])
async def test_kernel_errors_are_mapped_and_a_broken_socket_is_replaced(at_once: bool) -> None:
    sock = RecordingSocket(fail_with=17, at_once=at_once)  # EEXIST
    adapter = _adapter(sock)
    with pytest.raises(IpvsExists):
        await adapter.apply(AddRealServer(VS, RS))
    sock.fail_with = 2  # ENOENT
    with pytest.raises(IpvsNotFound):
        await adapter.apply(DeleteRealServer(VS, RS.key))
    assert not sock.closed  # the kernel answered: the socket is fine
    sock.fail_with = OSError(105, "No buffer space available")
    with pytest.raises(IpvsTransient):
        await adapter.apply(EditRealServer(VS, RS))
    assert sock.closed  # ENOBUFS: the socket is dropped, the next request opens a new one
    assert adapter._socket is None
    assert sock.msg_queue.queues == {}  # every request's queue freed
    assert sock.addr_pool.freed == [101, 102, 103]  # and its sequence number
    await adapter.close()


def _received(op: Any) -> bytes:
    """A dump answer as the kernel sends it (it carries the same attributes as the request that
    made the entry)."""
    cmd, attrs = genl_codec.request_for(op)
    return genl_codec.message(42, genl_codec.NLM_F_MULTI, 1, cmd, attrs)


@pytest.mark.parametrize("at_once", [False, True], ids=["queued", "on-the-socket"])
async def test_a_dump_reads_our_virtual_servers_and_their_real_servers_only(at_once: bool) -> None:
    sock = RecordingSocket(at_once=at_once)
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


async def test_an_answer_already_on_the_socket_costs_no_trip_through_the_event_loop() -> None:
    """The kernel answers inside send(): in a loop busy with probes, waiting for the loop to
    deliver each answer made a pass of 1 000 adds take 31 s in the test VM."""
    sock = RecordingSocket(at_once=True)
    adapter = _adapter(sock)
    ran: list[int] = []
    asyncio.get_running_loop().call_soon(ran.append, 1)  # the next thing the loop would do
    for _ in range(20):
        await adapter.apply(EditRealServer(VS, RS))
    assert ran == [] and sock.received == 20  # every ACK read from the socket, in one go
    assert sock.msg_queue.queues == {} and sock.addr_pool.freed == list(range(101, 121))
    await adapter.close()
