"""HTTPS probe against a loopback TLS server with throwaway trustme CAs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from healthd.checkspec import HttpCheck, Reason, Target
from healthd.probes import run_probe
from healthd.probes.http import server_name, ssl_context

Serve = Callable[..., Awaitable[int]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def other_ca_file(tmp_path: Path) -> str:
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


class TlsServer:
    """An HTTPS server answering 200; records the SNI name of each handshake."""

    def __init__(self, ca: trustme.CA, *names: str) -> None:
        self.server_names: list[str | None] = []
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*names).configure_cert(self.context)
        self.context.sni_callback = self._sni

    def _sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nUP")
            await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self, serve: Serve) -> Target:
        return Target("127.0.0.1", await serve(self.handle, ssl=self.context))


@pytest.fixture(autouse=True)
def _quiet_handshake_failures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="asyncio")  # the server logs the handshakes we fail


async def test_verified_by_ip_san(serve: Serve, ca: trustme.CA, ca_file: str) -> None:
    server = TlsServer(ca, "127.0.0.1", "backend.test")
    target = await server.start(serve)
    result = await run_probe(HttpCheck(https=True, ca_file=ca_file, expect_body="UP"), target)
    assert result.ok, result
    assert result.detail == f"HTTPS GET 127.0.0.1:{target.port}/: status 200"
    assert server.server_names == [None]  # an IP address is never sent as SNI


async def test_wrong_ca_fails(serve: Serve, ca: trustme.CA, other_ca_file: str) -> None:
    target = await TlsServer(ca, "127.0.0.1").start(serve)
    result = await run_probe(HttpCheck(https=True, ca_file=other_ca_file), target)
    assert result.reason is Reason.TLS, result
    assert "certificate verify failed" in result.detail
    assert result.http_status is None


async def test_ip_not_in_certificate_fails(serve: Serve, ca: trustme.CA, ca_file: str) -> None:
    target = await TlsServer(ca, "backend.test").start(serve)
    result = await run_probe(HttpCheck(https=True, ca_file=ca_file), target)
    assert result.reason is Reason.TLS, result
    assert "127.0.0.1" in result.detail  # "IP address mismatch, certificate is not valid for ..."


async def test_verify_false_accepts_any_certificate(
    serve: Serve, ca: trustme.CA, other_ca_file: str
) -> None:
    target = await TlsServer(ca, "backend.test").start(serve)
    spec = HttpCheck(https=True, verify=False, ca_file=other_ca_file)
    assert (await run_probe(spec, target)).ok


@pytest.mark.parametrize(
    ("host", "sni"),
    [
        pytest.param(None, "backend.test", id="sni"),
        pytest.param("backend.test:443", None, id="host"),
        pytest.param("wrong.test", "backend.test", id="sni-over-host"),
    ],
)
async def test_sni(
    serve: Serve, ca: trustme.CA, ca_file: str, host: str | None, sni: str | None
) -> None:
    server = TlsServer(ca, "backend.test")
    target = await server.start(serve)
    result = await run_probe(HttpCheck(https=True, ca_file=ca_file, host=host, sni=sni), target)
    assert result.ok, result
    assert server.server_names == ["backend.test"]


async def test_sni_name_is_verified(serve: Serve, ca: trustme.CA, ca_file: str) -> None:
    target = await TlsServer(ca, "backend.test").start(serve)
    result = await run_probe(HttpCheck(https=True, ca_file=ca_file, sni="other.test"), target)
    assert result.reason is Reason.TLS
    assert "other.test" in result.detail


async def test_plain_http_server_behind_https_check(serve: Serve, ca_file: str) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    port = await serve(plain)
    result = await run_probe(HttpCheck(https=True, ca_file=ca_file), Target("127.0.0.1", port))
    assert result.reason in (Reason.TLS, Reason.RESET, Reason.PROTOCOL), result
    assert not result.ok


async def test_missing_ca_file_is_an_error(tmp_path: Path) -> None:
    spec = HttpCheck(https=True, ca_file=str(tmp_path / "absent.pem"))
    result = await run_probe(spec, Target("127.0.0.1", 1))
    assert result.reason is Reason.ERROR
    assert "ca_file" in result.detail


def test_ssl_contexts_are_cached(ca_file: str) -> None:
    assert ssl_context(True, ca_file) is ssl_context(True, ca_file)
    assert ssl_context(True, ca_file) is not ssl_context(True, None)
    unverified = ssl_context(False, ca_file)
    assert unverified is ssl_context(False, None)
    assert unverified.verify_mode is ssl.CERT_NONE
    assert not unverified.check_hostname
    assert ssl_context(True, None).verify_mode is ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(HttpCheck(), "192.0.2.1", id="address"),
        pytest.param(HttpCheck(host="a.test"), "a.test", id="host"),
        pytest.param(HttpCheck(host="a.test:8443"), "a.test", id="host-port"),
        pytest.param(HttpCheck(host="a.test", sni="b.test"), "b.test", id="sni"),
    ],
)
def test_server_name(spec: HttpCheck, expected: str) -> None:
    assert server_name(spec, Target("192.0.2.1", 443)) == expected


async def test_silent_tls_server_is_cancelled_cleanly(
    serve: Serve,
    ca: trustme.CA,
    ca_file: str,
    settle: Callable[..., Awaitable[bool]],
    no_leftovers: Callable[[], Awaitable[None]],
) -> None:
    server = TlsServer(ca, "127.0.0.1")
    got_request, closed = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")  # the handshake worked and the request came
            got_request.set()
            while await reader.read(4096):
                pass
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            closed.set()
            writer.close()

    port = await serve(silent, ssl=server.context)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await run_probe(HttpCheck(https=True, ca_file=ca_file), Target("127.0.0.1", port))
    assert got_request.is_set()
    assert await settle(closed.is_set), "the server never saw the connection closed"
    await no_leftovers()
