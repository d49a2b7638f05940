"""The netlink adapter on the real kernel: add, edit, delete and dump of virtual and real servers
for IPv4, IPv6 and fwmark, connection counters and 64-bit stats, and errors mapped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from ipvsadm import Ipvsadm
from netns import NatTopology

from healthd.ipvs.errors import IpvsExists, IpvsInvalid, IpvsNotFound
from healthd.ipvs.netlink import NetlinkIpvs
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    EditRealServer,
    EditVirtualServer,
    Forwarding,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
)

pytestmark = pytest.mark.kernel
T = TypeVar("T")

V4 = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
V6 = VirtualServerKey.for_address(Protocol.UDP, "fd00:0:0:1::1", 53)
FWM = VirtualServerKey.for_fwmark(9)


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(_wrap(coro))


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def test_add_edit_delete_and_dump_ipv4_ipv6_fwmark(ipvsadm: Ipvsadm, _ipvs_clean: None) -> None:
    async def scenario() -> None:
        port = await NetlinkIpvs.open()
        try:
            await port.apply(AddVirtualServer(VirtualServerSpec(V4, "rr")))
            await port.apply(
                AddVirtualServer(VirtualServerSpec(V6, "wrr", persistence_timeout_s=60))
            )
            await port.apply(AddVirtualServer(VirtualServerSpec(FWM, "sh")))
            nat = RealServerSpec(RealServerKey("192.168.1.101", 80), Forwarding.NAT, 3)
            dr6 = RealServerSpec(RealServerKey("fd00:0:0:2::101", 53), Forwarding.DR, 2)
            tun = RealServerSpec(RealServerKey("192.168.1.102", 0), Forwarding.TUNNEL, 4)
            await port.apply(AddRealServer(V4, nat))
            await port.apply(AddRealServer(V6, dr6))
            await port.apply(AddRealServer(FWM, tun))
            table = ipvsadm()
            assert table["TCP 10.0.0.1:80"]["scheduler"] == "rr"
            assert table["TCP 10.0.0.1:80"]["real_servers"]["192.168.1.101:80"]["forward"] == "Masq"
            assert table["UDP [fd00:0:0:1::1]:53"]["persistent"] == 60
            assert (
                table["UDP [fd00:0:0:1::1]:53"]["real_servers"]["[fd00:0:0:2::101]:53"]["forward"]
                == "Route"
            )
            assert table["FWM 9"]["real_servers"]["192.168.1.102:0"]["forward"] == "Tunnel"

            observed = await port.dump([V4, V6, FWM])
            assert observed[V4].spec == VirtualServerSpec(V4, "rr")
            assert observed[V6].spec == VirtualServerSpec(V6, "wrr", persistence_timeout_s=60)
            assert observed[FWM].spec == VirtualServerSpec(FWM, "sh")
            assert observed[V4].real_servers[nat.key].spec == nat
            assert observed[V6].real_servers[dr6.key].spec == dr6
            assert observed[FWM].real_servers[tun.key].spec == tun

            # Trap 1 on the real kernel: a weight change keeps NAT as NAT.
            await port.apply(EditRealServer(V4, RealServerSpec(nat.key, Forwarding.NAT, 0)))
            rs = ipvsadm()["TCP 10.0.0.1:80"]["real_servers"]["192.168.1.101:80"]
            assert (rs["forward"], rs["weight"]) == ("Masq", 0)
            # Trap 3: a scheduler change keeps persistence; removing persistence works too.
            await port.apply(
                EditVirtualServer(VirtualServerSpec(V6, "rr", persistence_timeout_s=60))
            )
            assert ipvsadm()["UDP [fd00:0:0:1::1]:53"]["persistent"] == 60
            await port.apply(EditVirtualServer(VirtualServerSpec(V6, "rr")))
            assert ipvsadm()["UDP [fd00:0:0:1::1]:53"]["persistent"] is None
            # Only the asked-for virtual servers are dumped.
            assert set(await port.dump([V4])) == {V4}

            await port.apply(DeleteRealServer(V4, nat.key))
            assert ipvsadm()["TCP 10.0.0.1:80"]["real_servers"] == {}
            for key in (V4, V6, FWM):
                await port.apply(DeleteVirtualServer(key))
            assert ipvsadm() == {}
        finally:
            await port.close()

    run(scenario())


def test_kernel_errors_are_mapped(ipvsadm: Ipvsadm, _ipvs_clean: None) -> None:
    async def scenario() -> None:
        port = await NetlinkIpvs.open()
        try:
            spec = VirtualServerSpec(V4, "rr")
            await port.apply(AddVirtualServer(spec))
            with pytest.raises(IpvsExists):
                await port.apply(AddVirtualServer(spec))
            rs = RealServerSpec(RealServerKey("192.168.1.101", 80), Forwarding.NAT, 1)
            with pytest.raises(IpvsNotFound):
                await port.apply(DeleteRealServer(V4, rs.key))
            with pytest.raises(IpvsNotFound):
                await port.apply(AddRealServer(V6, rs))  # no such virtual server
            with pytest.raises((IpvsNotFound, IpvsInvalid)):
                await port.apply(AddVirtualServer(VirtualServerSpec(V6, "no-such-scheduler")))
            await port.apply(AddRealServer(V4, rs))
            with pytest.raises(IpvsExists):
                await port.apply(AddRealServer(V4, rs))
        finally:
            await port.close()

    run(scenario())


def test_connection_counters_and_traffic_stats(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    async def setup(port: NetlinkIpvs) -> None:
        await port.apply(AddVirtualServer(VirtualServerSpec(V4, "rr")))
        for b in nat_topo.backends:
            key = RealServerKey(b.addr, 80)
            await port.apply(AddRealServer(V4, RealServerSpec(key, Forwarding.NAT, 1)))

    async def scenario() -> None:
        port = await NetlinkIpvs.open()
        try:
            await setup(port)
            answers = await asyncio.to_thread(nat_topo.request, 30)
            assert sum(answers.values()) == 30
            deadline = time.monotonic() + 5  # the kernel refreshes stats every 2 s
            while True:
                observed = (await port.dump([V4]))[V4]
                if observed.stats.connections >= 30 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert observed.stats.connections == 30
            assert observed.stats.packets_in > 0 and observed.stats.packets_out > 0
            assert observed.stats.bytes_in > 0 and observed.stats.bytes_out > 0
            per_rs = {k.address: v.stats.connections for k, v in observed.real_servers.items()}
            assert per_rs == {"192.168.1.101": 10, "192.168.1.102": 10, "192.168.1.103": 10}
            # Connections just closed sit in TIME_WAIT: the kernel counts them as inactive.
            assert sum(v.inactive_connections for v in observed.real_servers.values()) > 0
            stats = ipvsadm(stats=True)["TCP 10.0.0.1:80"]["stats"]
            assert stats["conns"] == observed.stats.connections
            assert stats["inbytes"] == observed.stats.bytes_in
        finally:
            await port.close()

    run(scenario())
