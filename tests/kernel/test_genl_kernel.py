"""The raw generic netlink adapter on the real kernel: the same table as ipvsadm and as the
pyroute2 adapter sees it, IPv4, IPv6 and fwmark, errors mapped, and a large table."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from ipvsadm import Ipvsadm

from healthd.ipvs.errors import IpvsExists, IpvsInvalid, IpvsNotFound
from healthd.ipvs.genl import GenlIpvs
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
    async def wrap() -> T:
        return await coro

    return asyncio.run(wrap())


def test_add_edit_delete_and_dump_agree_with_ipvsadm_and_pyroute2(
    ipvsadm: Ipvsadm, _ipvs_clean: None
) -> None:
    async def scenario() -> None:
        port = await GenlIpvs.open()
        witness = await NetlinkIpvs.open()
        try:
            await port.apply(AddVirtualServer(VirtualServerSpec(V4, "rr")))
            await port.apply(
                AddVirtualServer(VirtualServerSpec(V6, "wrr", persistence_timeout_s=60))
            )
            await port.apply(AddVirtualServer(VirtualServerSpec(FWM, "sh")))
            nat = RealServerSpec(RealServerKey("192.168.1.101", 80), Forwarding.NAT, 3, 50, 5)
            dr6 = RealServerSpec(RealServerKey("fd00:0:0:2::101", 53), Forwarding.DR, 2)
            tun = RealServerSpec(RealServerKey("192.168.1.102", 0), Forwarding.TUNNEL, 4)
            await port.apply(AddRealServer(V4, nat))
            await port.apply(AddRealServer(V6, dr6))
            await port.apply(AddRealServer(FWM, tun))
            table = ipvsadm()
            assert table["TCP 10.0.0.1:80"]["scheduler"] == "rr"
            assert table["TCP 10.0.0.1:80"]["real_servers"]["192.168.1.101:80"]["forward"] == "Masq"
            assert table["UDP [fd00:0:0:1::1]:53"]["persistent"] == 60
            v6_rs = table["UDP [fd00:0:0:1::1]:53"]["real_servers"]["[fd00:0:0:2::101]:53"]
            assert v6_rs["forward"] == "Route"
            assert table["FWM 9"]["real_servers"]["192.168.1.102:0"]["forward"] == "Tunnel"

            observed = await port.dump([V4, V6, FWM])
            assert observed == await witness.dump([V4, V6, FWM])
            assert observed[V6].spec == VirtualServerSpec(V6, "wrr", persistence_timeout_s=60)
            assert observed[V4].real_servers[nat.key].spec == nat
            assert observed[FWM].real_servers[tun.key].spec == tun

            # A weight change keeps NAT as NAT; a scheduler change keeps persistence.
            await port.apply(EditRealServer(V4, RealServerSpec(nat.key, Forwarding.NAT, 0)))
            rs = ipvsadm()["TCP 10.0.0.1:80"]["real_servers"]["192.168.1.101:80"]
            assert (rs["forward"], rs["weight"]) == ("Masq", 0)
            await port.apply(
                EditVirtualServer(VirtualServerSpec(V6, "rr", persistence_timeout_s=60))
            )
            assert ipvsadm()["UDP [fd00:0:0:1::1]:53"]["persistent"] == 60
            await port.apply(EditVirtualServer(VirtualServerSpec(V6, "rr")))
            assert ipvsadm()["UDP [fd00:0:0:1::1]:53"]["persistent"] is None
            assert set(await port.dump([V4])) == {V4}

            await port.apply(DeleteRealServer(V4, nat.key))
            assert ipvsadm()["TCP 10.0.0.1:80"]["real_servers"] == {}
            for key in (V4, V6, FWM):
                await port.apply(DeleteVirtualServer(key))
            assert ipvsadm() == {}
        finally:
            await port.close()
            await witness.close()

    run(scenario())


def test_kernel_errors_are_mapped(_ipvs_clean: None) -> None:
    async def scenario() -> None:
        port = await GenlIpvs.open()
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
            await port.apply(DeleteVirtualServer(V4))  # the socket still works after errors
        finally:
            await port.close()

    run(scenario())


def test_a_large_table_dumps_whole(ipvsadm: Ipvsadm, _ipvs_clean: None) -> None:
    count = 3000  # several dump datagrams

    async def scenario() -> None:
        port = await GenlIpvs.open()
        witness = await NetlinkIpvs.open()
        try:
            await port.apply(AddVirtualServer(VirtualServerSpec(V4, "wrr")))
            specs = [
                RealServerSpec(RealServerKey("10.200.0.1", 20000 + i), Forwarding.NAT, i % 3)
                for i in range(count)
            ]
            for spec in specs:
                await port.apply(AddRealServer(V4, spec))
            observed = (await port.dump([V4]))[V4]
            assert {k: v.spec for k, v in observed.real_servers.items()} == {
                s.key: s for s in specs
            }
            assert (await witness.dump([V4]))[V4].real_servers == observed.real_servers
            assert len(ipvsadm()["TCP 10.0.0.1:80"]["real_servers"]) == count
            await port.apply(DeleteVirtualServer(V4))
        finally:
            await port.close()
            await witness.close()

    run(scenario())
