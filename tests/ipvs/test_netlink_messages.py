"""The netlink adapter's requests, checked without a kernel: each pyroute2 trap has a guard here.

The same adapter is run against the real kernel in tests/kernel (inside the VM test bed).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import Any

import pytest
from pyroute2 import IPVSDest, IPVSService
from pyroute2.netlink.generic import ipvs as genl_ipvs

from healthd.ipvs import netlink
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


def _encode_decode(cmd: int, attrs: list[tuple[str, Any]]) -> Any:
    """Encode a generic netlink IPVS message the way pyroute2 sends it, and decode it back."""
    msg = genl_ipvs.ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    msg.encode()
    parsed = genl_ipvs.ipvsmsg(msg.data)
    parsed.decode()
    return parsed


def test_weight_change_of_a_nat_real_server_stays_nat_on_the_wire() -> None:
    """Trap 1: IPVSDest defaults to DR and SET_DEST replaces every attribute it receives."""
    dest = IPVSDest(**netlink.dest_fields(RS))
    sent = _encode_decode(genl_ipvs.IPVS_CMD_SET_DEST, [("IPVS_CMD_ATTR_DEST", dest.dump_nla())])
    attrs = sent.get("IPVS_CMD_ATTR_DEST")
    assert attrs.get("IPVS_DEST_ATTR_FWD_METHOD") == 0  # masquerading, not 3 (route)
    assert attrs.get("IPVS_DEST_ATTR_WEIGHT") == 0
    assert attrs.get("IPVS_DEST_ATTR_U_THRESH") == 0
    assert attrs.get("IPVS_DEST_ATTR_L_THRESH") == 0


@pytest.mark.parametrize(
    ("forwarding", "code"),
    [(Forwarding.NAT, 0), (Forwarding.TUNNEL, 2), (Forwarding.DR, 3)],
    ids=["nat", "tunnel", "dr"],
)
def test_forwarding_method_codes(forwarding: Forwarding, code: int) -> None:
    spec = RealServerSpec(RealServerKey("192.168.1.101", 80), forwarding, 5)
    assert netlink.dest_fields(spec)["fwd_method"] == code


def test_service_requests_carry_scheduler_timeout_and_only_the_persistent_flag() -> None:
    """Trap 3: IPVSService defaults (wlc, flags mask 0xffff) must never reach the kernel."""
    spec = VirtualServerSpec(VS, scheduler="rr", persistence_timeout_s=300)
    fields = netlink.service_fields(spec)
    sent = _encode_decode(
        genl_ipvs.IPVS_CMD_SET_SERVICE,
        [("IPVS_CMD_ATTR_SERVICE", IPVSService(**fields).dump_nla())],
    )
    svc = sent.get("IPVS_CMD_ATTR_SERVICE")
    assert svc.get("IPVS_SVC_ATTR_SCHED_NAME") == "rr"
    assert svc.get("IPVS_SVC_ATTR_TIMEOUT") == 300
    flags = svc.get("IPVS_SVC_ATTR_FLAGS")
    assert (flags["flags"], flags["mask"]) == (1, 1)
    assert svc.get("IPVS_SVC_ATTR_NETMASK") == "255.255.255.255"
    assert svc.get("IPVS_SVC_ATTR_PROTOCOL") == socket.IPPROTO_TCP


def test_ipv6_service_netmask_is_prefix_length_128_as_the_kernel_reads_it() -> None:
    fields = netlink.service_fields(VirtualServerSpec(VS6, scheduler="rr"))
    raw = socket.inet_aton(fields["netmask"])
    assert struct.unpack("=I", raw)[0] == 128  # kernel: nla_get_be32 compared as an integer


def test_fwmark_service_key_has_no_address() -> None:
    key = VirtualServerKey.for_fwmark(7, 6)
    assert netlink.service_key_fields(key) == {"af": socket.AF_INET6, "fwmark": 7}


class RecordingSocket:
    """Stands in for pyroute2's IPVS socket: records verbs and checks one call at a time."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail_with = fail_with
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.closed = False

    def _enter(self) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.002)
        with self.lock:
            self.active -= 1

    def service(self, verb: str, service: Any = None) -> list[Any]:
        self._enter()
        self.calls.append(("service", verb, dict(service or {})))
        if self.fail_with is not None:
            raise self.fail_with
        return []

    def dest(self, verb: str, service: Any, dest: Any = None) -> list[Any]:
        self._enter()
        self.calls.append(("dest", verb, dict(dest or {})))
        if self.fail_with is not None:
            raise self.fail_with
        return []

    def close(self) -> None:
        self.closed = True


def _adapter(sock: RecordingSocket) -> netlink.NetlinkIpvs:
    adapter = netlink.NetlinkIpvs()
    adapter._socket = sock
    return adapter


async def test_adapter_uses_add_set_del_verbs_never_update() -> None:
    """Trap 2: pyroute2 maps "update" to DEL_*."""
    sock = RecordingSocket()
    adapter = _adapter(sock)
    await adapter.apply(AddVirtualServer(VirtualServerSpec(VS, "rr")))
    await adapter.apply(EditVirtualServer(VirtualServerSpec(VS, "wrr")))
    await adapter.apply(AddRealServer(VS, RS))
    await adapter.apply(EditRealServer(VS, RS))
    await adapter.apply(DeleteRealServer(VS, RS.key))
    await adapter.close()
    assert [(kind, verb) for kind, verb, _ in sock.calls] == [
        ("service", "add"),
        ("service", "set"),
        ("dest", "add"),
        ("dest", "set"),
        ("dest", "del"),
    ]
    edit = sock.calls[3][2]
    assert edit["fwd_method"] == 0 and edit["weight"] == 0


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
