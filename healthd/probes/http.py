"""HTTP(S) probe: one HTTP/1.1 request; plain status-only checks take the lean path (http_lean),
the others go over asyncio streams, parsed with h11."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from dataclasses import replace

import h11

from healthd.checkspec import HttpCheck, ProbeResult, Reason, Target
from healthd.probes.http_lean import probe_status
from healthd.probes.lastlook import Look
from healthd.probes.matchers import (
    body_matches,
    body_mismatch_text,
    host_without_port,
    os_error_text,
    status_matches,
    status_text,
)
from healthd.probes.result import classify_os_error, complete

_READ_SIZE = 65536
_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_CLOSE_WAIT_S = 0.2  # how long a clean close (TLS close_notify) may take before we abort

# The only module state: SSL contexts by (verify, ca_file); building one is expensive.
_SSL_CONTEXTS: dict[tuple[bool, str | None], ssl.SSLContext] = {}


class _ClosedEarly(Exception):
    """The server closed the connection before sending any response byte."""


def ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """A cached client context; ``verify=False`` disables hostname and certificate checks."""
    key = (verify, ca_file if verify else None)
    context = _SSL_CONTEXTS.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=key[1])
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        _SSL_CONTEXTS[key] = context
    return context


# --- TLS certificate expiry (for the healthd_check_tls_cert_expiry_timestamp_seconds metric) ---
def peer_not_after(writer: asyncio.StreamWriter) -> float | None:
    """The server certificate's notAfter as Unix time, or None when it cannot be read.

    A verified handshake gives the decoded certificate; without verification only its DER form
    is available, decoded with ``cryptography`` when that is installed (else None).
    """
    tls = writer.get_extra_info("ssl_object")
    if not isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
        return None
    decoded = tls.getpeercert()
    if decoded and isinstance(decoded.get("notAfter"), str):
        return float(ssl.cert_time_to_seconds(str(decoded["notAfter"])))
    der = tls.getpeercert(binary_form=True)
    return _der_not_after(der) if der else None


def _der_not_after(der: bytes) -> float | None:
    try:
        from cryptography import x509
    except ImportError:
        return None
    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
    except ValueError:
        return None


# --- end TLS certificate expiry ---


def server_name(spec: HttpCheck, target: Target) -> str:
    """Name for SNI and certificate checks; an IP address means no SNI, IP SAN checked."""
    if spec.sni:
        return spec.sni
    if spec.host:
        return host_without_port(spec.host)
    return target.address


def build_request(spec: HttpCheck, target: Target) -> h11.Request:
    """The request; ``spec.headers`` replace same-named defaults."""
    defaults = {
        "host": spec.host or target.endpoint(spec.port),
        "user-agent": "healthd",
        "connection": "close",
    }
    extra = {name.lower() for name, _ in spec.headers}
    headers = [(name, value) for name, value in defaults.items() if name not in extra]
    headers.extend(spec.headers)
    return h11.Request(method=spec.method, target=spec.path, headers=headers)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
    """The next h11 event, reading from the server as needed."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            assert not isinstance(event, type)  # h11.PAUSED cannot happen on a client
            return event
        data = await reader.read(_READ_SIZE)
        if not data and conn.their_state is h11.SEND_RESPONSE and not conn.trailing_data[0]:
            raise _ClosedEarly
        conn.receive_data(data)


async def _read_head(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Response:
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Response):
            return event
        if not isinstance(event, h11.InformationalResponse):
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} before response")


async def _body_found(
    conn: h11.Connection, reader: asyncio.StreamReader, pattern: str, limit: int
) -> bool:
    """Search ``pattern`` in the body as it arrives; give up after ``limit`` bytes or at its end."""
    body = bytearray()
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            body += event.data[: limit - len(body)]
            if body_matches(body, pattern):
                return True
            if len(body) >= limit:
                return False
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return body_matches(body, pattern)


async def _close(writer: asyncio.StreamWriter, graceful: bool) -> None:
    """Close the connection; abort it (no TLS goodbye) after an error, a cancellation or a delay."""
    if not graceful:
        writer.transport.abort()
        return
    writer.close()
    deadline = asyncio.get_running_loop().call_later(_CLOSE_WAIT_S, writer.transport.abort)
    try:
        await writer.wait_closed()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except Exception:  # a failed goodbye changes nothing
        writer.transport.abort()
    finally:
        deadline.cancel()


# Plain-HTTP requests of status-only checks, built and validated once (see request_bytes).
_REQUESTS: dict[tuple[HttpCheck, Target], bytes] = {}
_MAX_REQUESTS = 100_000


def lean_http(spec: HttpCheck) -> bool:
    """Whether the lean path runs this check (``http_lean.py``, or the C engine): plain HTTP,
    the status decides."""
    return not spec.https and spec.expect_body is None


def request_bytes(spec: HttpCheck, target: Target) -> bytes:
    """The request on the wire; raises ``h11.LocalProtocolError`` for an invalid one."""
    key = (spec, target)
    data = _REQUESTS.get(key)
    if data is None:
        conn = h11.Connection(h11.CLIENT)
        data = (conn.send(build_request(spec, target)) or b"") + (
            conn.send(h11.EndOfMessage()) or b""
        )
        if len(_REQUESTS) >= _MAX_REQUESTS:
            _REQUESTS.clear()
        _REQUESTS[key] = data
    return data


async def probe_http(spec: HttpCheck, target: Target, look: Look | None = None) -> ProbeResult:
    """One HTTP(S) request; ok iff the status (and the body, if asked) matched (``look``: the
    deadline's last look at the socket, ``lastlook.py``)."""
    start = time.monotonic()
    port = target.port if spec.port is None else spec.port
    if lean_http(spec):  # the status decides
        try:
            request = request_bytes(spec, target)
        except h11.LocalProtocolError as exc:
            return complete(spec, target, start, Reason.ERROR, f"invalid request: {exc}")
        return await probe_status(spec, target, port, request, start, look)
    conn = h11.Connection(h11.CLIENT)
    try:
        request = conn.send(build_request(spec, target)) or b""
        request += conn.send(h11.EndOfMessage()) or b""
        context = ssl_context(spec.verify, spec.ca_file) if spec.https else None
    except h11.LocalProtocolError as exc:
        return complete(spec, target, start, Reason.ERROR, f"invalid request: {exc}")
    except OSError as exc:
        return complete(spec, target, start, Reason.ERROR, f"ca_file: {os_error_text(exc)}")

    status: int | None = None
    not_after: float | None = None  # TLS certificate expiry
    writer: asyncio.StreamWriter | None = None
    graceful = False
    sock: socket.socket | None = None
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in target.address else socket.AF_INET, _STREAM)
        if look is not None:
            look.watch(sock)
        await asyncio.get_running_loop().sock_connect(sock, (target.address, port))
        if look is not None:
            look.connect_seen()
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=context,
            server_hostname=server_name(spec, target) if context else None,
        )
        not_after = peer_not_after(writer) if context else None  # TLS certificate expiry
        writer.write(request)
        await writer.drain()
        status = (await _read_head(conn, reader)).status_code
        if not status_matches(status, spec.expect_status):
            reason, what = Reason.STATUS, status_text(status)
        elif spec.expect_body is None or await _body_found(
            conn, reader, spec.expect_body, spec.max_body_bytes
        ):
            reason, what = Reason.OK, status_text(status)
        else:
            reason, what = Reason.BODY, body_mismatch_text(spec.expect_body)
        graceful = True
    except ssl.SSLCertVerificationError as exc:
        reason, what = Reason.TLS, f"certificate verify failed: {exc.verify_message}"
    except ssl.SSLError as exc:
        reason, what = Reason.TLS, f"TLS error: {exc.reason or exc}"
    except _ClosedEarly:
        reason, what = Reason.PROTOCOL, "connection closed without a response"
    except h11.RemoteProtocolError as exc:
        reason, what = Reason.PROTOCOL, f"bad response: {exc}"
    except OSError as exc:
        reason, what = classify_os_error(exc)
    except re.error as exc:
        reason, what = Reason.ERROR, f"bad expect_body: {exc}"
    except ValueError as exc:  # e.g. a server name that is not valid IDNA
        reason, what = Reason.ERROR, str(exc)
    finally:
        if look is not None:
            look.closing()
        if writer is not None:
            await _close(writer, graceful)
        elif sock is not None:
            sock.close()  # the connect or the TLS handshake failed: no transport owns it
    result = complete(spec, target, start, reason, what, http_status=status)
    return result if not_after is None else replace(result, tls_not_after=not_after)
