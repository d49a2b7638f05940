"""The fake IPVS table refuses what the kernel refuses; errno maps to the documented classes."""

from __future__ import annotations

import errno

import pytest

from healthd.ipvs.errors import (
    IpvsError,
    IpvsExists,
    IpvsInvalid,
    IpvsNotFound,
    IpvsTransient,
    IpvsUnavailable,
    from_errno,
)
from healthd.ipvs.fake import FakeIpvs
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    EditRealServer,
    EditVirtualServer,
    Forwarding,
    ObservedRealServer,
    ObservedVirtualServer,
    Op,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
)

VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
VS_SPEC = VirtualServerSpec(VS, "rr")
RS = RealServerSpec(RealServerKey("192.168.1.1", 80), Forwarding.NAT, 1)
MISSING_RS = RealServerKey("192.168.1.9", 80)


def seeded() -> FakeIpvs:
    return FakeIpvs([ObservedVirtualServer(VS_SPEC, {RS.key: ObservedRealServer(RS)})])


def test_applied_operations_show_in_the_snapshot() -> None:
    fake = FakeIpvs()
    fake.apply_now(AddVirtualServer(VS_SPEC))
    fake.apply_now(AddRealServer(VS, RS))
    fake.apply_now(EditRealServer(VS, RealServerSpec(RS.key, Forwarding.DR, 4)))
    fake.apply_now(EditVirtualServer(VirtualServerSpec(VS, "wlc")))
    snap = fake.snapshot()
    assert snap[VS].spec.scheduler == "wlc"
    assert snap[VS].real_servers[RS.key].spec == RealServerSpec(RS.key, Forwarding.DR, 4)
    fake.apply_now(DeleteRealServer(VS, RS.key))
    assert fake.snapshot()[VS].real_servers == {}
    fake.apply_now(DeleteVirtualServer(VS))
    assert fake.snapshot() == {}
    assert len(fake.applied) == 6


def test_snapshot_is_a_copy_and_only_has_what_was_asked_for() -> None:
    fake = seeded()
    other = VirtualServerKey.for_fwmark(7)
    snap = fake.snapshot([VS, other])
    assert set(snap) == {VS}  # absent ones are left out
    fake.apply_now(DeleteRealServer(VS, RS.key))
    assert RS.key in snap[VS].real_servers  # an earlier snapshot does not change


async def test_async_port_matches_the_synchronous_helpers() -> None:
    fake = FakeIpvs()
    await fake.apply(AddVirtualServer(VS_SPEC))
    assert await fake.dump([VS]) == fake.snapshot([VS])
    assert fake.dumps == 1


REFUSED = [
    pytest.param(AddVirtualServer(VS_SPEC), IpvsExists, id="add-existing-virtual-server"),
    pytest.param(AddRealServer(VS, RS), IpvsExists, id="add-existing-real-server"),
    pytest.param(
        AddRealServer(VirtualServerKey.for_fwmark(7), RS),
        IpvsNotFound,
        id="real-server-in-missing-virtual-server",
    ),
    pytest.param(
        EditVirtualServer(VirtualServerSpec(VirtualServerKey.for_fwmark(7), "rr")),
        IpvsNotFound,
        id="edit-missing-virtual-server",
    ),
    pytest.param(
        DeleteVirtualServer(VirtualServerKey.for_fwmark(7)),
        IpvsNotFound,
        id="delete-missing-virtual-server",
    ),
    pytest.param(
        EditRealServer(VS, RealServerSpec(MISSING_RS, Forwarding.NAT, 1)),
        IpvsNotFound,
        id="edit-missing-real-server",
    ),
    pytest.param(DeleteRealServer(VS, MISSING_RS), IpvsNotFound, id="delete-missing-real-server"),
    pytest.param(
        AddVirtualServer(
            VirtualServerSpec(VirtualServerKey.for_address(Protocol.UDP, "10.0.0.1", 53), "fast")
        ),
        IpvsError,
        id="unknown-scheduler-on-add",
    ),
    pytest.param(
        EditVirtualServer(VirtualServerSpec(VS, "fast")), IpvsError, id="unknown-scheduler-on-edit"
    ),
    pytest.param(
        AddRealServer(VS, RealServerSpec(RealServerKey("2001:db8::a", 80), Forwarding.NAT, 1)),
        IpvsInvalid,
        id="ipv6-real-server-in-ipv4-nat",
    ),
    pytest.param(
        AddRealServer(VS, RealServerSpec(RealServerKey("2001:db8::a", 80), Forwarding.DR, 1)),
        IpvsInvalid,
        id="ipv6-real-server-in-ipv4-dr",
    ),
    pytest.param(
        AddRealServer(VS, RealServerSpec(RealServerKey("192.168.1.2", 80), Forwarding.NAT, -1)),
        IpvsInvalid,
        id="negative-weight",
    ),
]


@pytest.mark.parametrize(("op", "error"), REFUSED)
def test_fake_refuses_what_the_kernel_refuses(op: Op, error: type[IpvsError]) -> None:
    fake = seeded()
    before = fake.snapshot()
    with pytest.raises(error) as info:
        fake.apply_now(op)
    assert str(op) in str(info.value)  # the message says which request failed
    assert fake.snapshot() == before  # and nothing changed
    assert fake.applied == []


def test_tunnel_may_mix_address_families() -> None:
    fake = seeded()
    v6 = RealServerSpec(RealServerKey("2001:db8::a", 80), Forwarding.TUNNEL, 1)
    fake.apply_now(AddRealServer(VS, v6))
    assert fake.snapshot()[VS].real_servers[v6.key].spec == v6


def test_deleting_a_virtual_server_deletes_its_real_servers() -> None:
    fake = seeded()
    fake.apply_now(DeleteVirtualServer(VS))
    fake.apply_now(AddVirtualServer(VS_SPEC))
    assert fake.snapshot()[VS].real_servers == {}


def test_set_connections_shows_in_the_snapshot() -> None:
    fake = seeded()
    fake.set_connections(VS, RS.key, active=3, inactive=7)
    seen = fake.snapshot()[VS].real_servers[RS.key]
    assert (seen.active_connections, seen.inactive_connections) == (3, 7)
    assert seen.spec == RS


@pytest.mark.parametrize(
    ("code", "error"),
    [
        pytest.param(errno.EEXIST, IpvsExists, id="EEXIST"),
        pytest.param(errno.ENOENT, IpvsNotFound, id="ENOENT"),
        pytest.param(errno.ESRCH, IpvsNotFound, id="ESRCH"),
        pytest.param(errno.EPERM, IpvsUnavailable, id="EPERM"),
        pytest.param(errno.EACCES, IpvsUnavailable, id="EACCES"),
        pytest.param(errno.ENOBUFS, IpvsTransient, id="ENOBUFS"),
        pytest.param(errno.EINVAL, IpvsInvalid, id="EINVAL"),
    ],
)
@pytest.mark.parametrize("sign", [1, -1])
def test_from_errno(code: int, error: type[IpvsError], sign: int) -> None:
    exc = from_errno(sign * code, "add virtual server TCP 10.0.0.1:80")
    assert type(exc) is error
    assert isinstance(exc, IpvsError)
    assert exc.code == code
    text = str(exc)
    assert text.startswith("add virtual server TCP 10.0.0.1:80: ")
    assert errno.errorcode[code] in text
