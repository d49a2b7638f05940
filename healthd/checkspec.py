"""Check specifications, probe targets and probe results: frozen values, no I/O.

A check spec says *what* to probe and how to judge it; ``CheckTiming`` says how often and how
patiently.  A probe is one pass: it returns exactly one ``ProbeResult`` and never raises for a
backend's fault.  Identical (spec, target) pairs are probed once and shared (see scheduler).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from healthd.model import Health, format_endpoint


class Reason(enum.Enum):
    """Bounded set of probe outcome codes (a metrics label)."""

    OK = "ok"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    RESET = "reset"
    TLS = "tls"
    PROTOCOL = "protocol"  # malformed or truncated response
    STATUS = "status"  # HTTP status not expected
    BODY = "body"  # body did not match expect_body
    EXIT = "exit"  # script exited non-zero
    SIGNAL = "signal"  # script killed by a signal
    ERROR = "error"  # anything else (spawn failure, OS error)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    reason: Reason
    detail: str  # human readable, e.g. "HTTP GET 192.168.1.102:80/healthz: status 503"
    duration_s: float
    http_status: int | None = None
    # HTTPS: the server certificate's notAfter (Unix time), when the handshake showed one.
    tls_not_after: float | None = None

    def says_the_same_as(self, other: ProbeResult) -> bool:
        """Equal but for the duration (every other field here)."""
        return (
            self.ok == other.ok
            and self.reason is other.reason
            and self.detail == other.detail
            and self.http_status == other.http_status
            and self.tls_not_after == other.tls_not_after
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Where a probe goes, and the virtual server it serves (scripts see both)."""

    address: str
    port: int
    vs_address: str = ""
    vs_port: int = 0
    vs_protocol: str = ""
    vs_fwmark: int = 0

    def endpoint(self, port: int | None = None) -> str:
        return format_endpoint(self.address, self.port if port is None else port)

    def without_virtual_server(self) -> Target:
        return Target(self.address, self.port)


@dataclass(frozen=True, slots=True)
class CheckTiming:
    interval_s: float = 2.0
    timeout_s: float = 1.0
    rise: int = 2
    fall: int = 3
    initial: Health = Health.UNKNOWN  # unknown: the first result decides; up/down: start there


TCP_CLOSES = frozenset({"reset", "graceful"})


@dataclass(frozen=True, slots=True)
class TcpCheck:
    port: int | None = None  # probe this port instead of the real server's
    # "graceful": close the connection with a FIN once it is up (the real server sees an orderly
    # close); "reset": with an RST (no TIME_WAIT on the director, as keepalived's TCP_CHECK does)
    close: str = "graceful"

    kind = "tcp"

    def describe(self, target: Target) -> str:
        return f"TCP connect {target.endpoint(self.port)}"


@dataclass(frozen=True, slots=True)
class HttpCheck:
    path: str = "/"
    method: str = "GET"  # GET or HEAD
    host: str | None = None  # Host header; default: the target address
    expect_status: tuple[tuple[int, int], ...] = ((200, 299),)
    expect_body: str | None = None  # regular expression searched in the first max_body_bytes
    https: bool = False
    verify: bool = True
    ca_file: str | None = None
    sni: str | None = None  # server name for SNI and verification; default: host, then address
    port: int | None = None
    max_body_bytes: int = 65536
    headers: tuple[tuple[str, str], ...] = ()

    kind = "http"

    def describe(self, target: Target) -> str:
        scheme = "HTTPS" if self.https else "HTTP"
        return f"{scheme} {self.method} {target.endpoint(self.port)}{self.path}"


@dataclass(frozen=True, slots=True)
class ScriptCheck:
    command: tuple[str, ...]
    max_output_bytes: int = 4096
    user: str | None = None  # run as this user when healthd is root (config: scripts.user)

    kind = "script"

    def describe(self, target: Target) -> str:
        return f"script {self.command[0]} for {target.endpoint()}"


CheckSpec = TcpCheck | HttpCheck | ScriptCheck


def probe_target(spec: CheckSpec, target: Target) -> Target:
    """The target as far as deduplication goes: scripts see the virtual server, others do not."""
    if isinstance(spec, ScriptCheck):
        return target
    return target.without_virtual_server()
