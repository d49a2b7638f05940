"""The HTTPS probe reports the server certificate's expiry (for the cert-expiry metric)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme

from healthd.checkspec import HttpCheck, Reason, Target
from healthd.probes import run_probe

Serve = Callable[..., Awaitable[int]]
NOT_AFTER = dt.datetime(2031, 5, 17, 12, 30, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(autouse=True)
def _quiet_handshake_failures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="asyncio")


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _tls_server(serve: Serve, ca: trustme.CA, status: int = 200) -> Target:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", not_after=NOT_AFTER).configure_cert(context)
    port = await serve(lambda r, w: _answer(r, w, status), ssl=context)
    return Target("127.0.0.1", port)


def _ca_file(ca: trustme.CA, tmp_path: object) -> str:
    path = f"{tmp_path}/ca.pem"
    ca.cert_pem.write_to_path(path)
    return path


async def test_verified_https_reports_the_certificate_expiry(
    serve: Serve, ca: trustme.CA, tmp_path: object
) -> None:
    target = await _tls_server(serve, ca)
    result = await run_probe(HttpCheck(https=True, ca_file=_ca_file(ca, tmp_path)), target)
    assert result.ok, result
    assert result.tls_not_after == NOT_AFTER.timestamp()


async def test_unverified_https_reports_it_too(serve: Serve, ca: trustme.CA) -> None:
    pytest.importorskip("cryptography")
    target = await _tls_server(serve, ca)
    result = await run_probe(HttpCheck(https=True, verify=False), target)
    assert result.ok, result
    assert result.tls_not_after == NOT_AFTER.timestamp()


async def test_a_failed_status_still_reports_the_expiry(serve: Serve, ca: trustme.CA) -> None:
    pytest.importorskip("cryptography")
    target = await _tls_server(serve, ca, status=503)
    result = await run_probe(HttpCheck(https=True, verify=False), target)
    assert result.reason is Reason.STATUS
    assert result.tls_not_after == NOT_AFTER.timestamp()


async def test_no_expiry_without_a_handshake(
    serve: Serve, ca: trustme.CA, tmp_path: object
) -> None:
    # A certificate from another CA fails verification: no certificate was accepted.
    target = await _tls_server(serve, trustme.CA())
    result = await run_probe(HttpCheck(https=True, ca_file=_ca_file(ca, tmp_path)), target)
    assert result.reason is Reason.TLS
    assert result.tls_not_after is None


async def test_plain_http_has_no_expiry(serve: Serve) -> None:
    port = await serve(lambda r, w: _answer(r, w, 200))
    result = await run_probe(HttpCheck(), Target("127.0.0.1", port))
    assert result.ok
    assert result.tls_not_after is None
