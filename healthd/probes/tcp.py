"""TCP connect probe: connect, then close (the hot path: no transports, no protocols)."""

from __future__ import annotations

import asyncio
import socket
import time

from healthd.checkspec import ProbeResult, Reason, Target, TcpCheck
from healthd.probes.result import classify_os_error, complete


async def probe_tcp(spec: TcpCheck, target: Target) -> ProbeResult:
    """One TCP connect to the target (``spec.port`` overrides the real server's port)."""
    start = time.monotonic()
    port = target.port if spec.port is None else spec.port
    family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        reason, what = classify_os_error(exc)
        return complete(spec, target, start, reason, what)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (target.address, port))
    except OSError as exc:
        reason, what = classify_os_error(exc)
        return complete(spec, target, start, reason, what)
    finally:
        sock.close()
    return complete(spec, target, start, Reason.OK, "connected")
