"""TCP connect probe against loopback listeners."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest
from probing import close_seen_by

from healthd.checkspec import Reason, Target, TcpCheck
from healthd.probes import run_probe, timeout_result
from healthd.probes.result import classify_os_error


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on (bound, then closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


async def test_accepted_is_ok(listener: socket.socket) -> None:
    target = Target("127.0.0.1", listener.getsockname()[1])
    result = await run_probe(TcpCheck(), target)
    assert result.ok
    assert result.reason is Reason.OK
    assert result.detail == f"TCP connect 127.0.0.1:{target.port}: connected"
    assert 0 <= result.duration_s < 1
    assert result.http_status is None


@pytest.mark.parametrize("close", ["reset", "graceful"])
async def test_the_real_server_sees_the_close_the_check_asks_for(
    listener: socket.socket, close: str
) -> None:
    target = Target("127.0.0.1", listener.getsockname()[1])
    assert (await run_probe(TcpCheck(close=close), target)).ok
    assert close_seen_by(listener) == close


async def test_refused() -> None:
    port = free_port()
    result = await run_probe(TcpCheck(), Target("127.0.0.1", port))
    assert not result.ok
    assert result.reason is Reason.REFUSED
    assert result.detail == f"TCP connect 127.0.0.1:{port}: connection refused"


async def test_spec_port_overrides_target_port(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert (await run_probe(TcpCheck(port=port), Target("127.0.0.1", free_port()))).ok
    refused = await run_probe(TcpCheck(port=free_port()), Target("127.0.0.1", port))
    assert refused.reason is Reason.REFUSED


@pytest.mark.usefixtures("ipv6")
async def test_ipv6_loopback() -> None:
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as sock:
        port = sock.getsockname()[1]
        result = await run_probe(TcpCheck(), Target("::1", port))
    assert result.ok, result
    assert result.detail == f"TCP connect [::1]:{port}: connected"
    refused = await run_probe(TcpCheck(), Target("::1", free_port("::1")))
    assert refused.reason is Reason.REFUSED


@pytest.mark.parametrize(
    ("exc", "reason", "text"),
    [
        pytest.param(
            ConnectionRefusedError(errno.ECONNREFUSED, "x"),
            Reason.REFUSED,
            "connection refused",
            id="refused",
        ),
        pytest.param(
            OSError(errno.EHOSTUNREACH, "No route to host"),
            Reason.UNREACHABLE,
            "no route to host",
            id="host-unreachable",
        ),
        pytest.param(
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            Reason.UNREACHABLE,
            "network is unreachable",
            id="net-unreachable",
        ),
        pytest.param(
            ConnectionResetError(errno.ECONNRESET, "x"),
            Reason.RESET,
            "connection reset",
            id="reset",
        ),
        pytest.param(
            OSError(errno.EMFILE, "Too many open files"),
            Reason.ERROR,
            "too many open files",
            id="other",
        ),
    ],
)
def test_classify_os_error(exc: OSError, reason: Reason, text: str) -> None:
    assert classify_os_error(exc) == (reason, text)


def test_timeout_result() -> None:
    result = timeout_result(TcpCheck(port=8080), Target("192.168.1.102", 80), 1.0)
    assert not result.ok
    assert result.reason is Reason.TIMEOUT
    assert result.detail == "TCP connect 192.168.1.102:8080: timed out after 1s"
    assert result.duration_s == 1.0


async def test_unknown_spec_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        await run_probe(object(), Target("127.0.0.1", 1))  # type: ignore[arg-type]
