"""Pure helpers for judging probe outcomes and wording their details (no I/O, no clocks)."""

from __future__ import annotations

import errno
import re
import signal
from collections.abc import Iterable

# Errors that mean "no route to the real server" rather than "the real server said no".
UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})


def status_matches(status: int, ranges: Iterable[tuple[int, int]]) -> bool:
    """True if ``status`` lies in one of the inclusive ``(low, high)`` ranges."""
    return any(low <= status <= high for low, high in ranges)


def decode_text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


def body_matches(body: bytes | bytearray, pattern: str) -> bool:
    """``re.search`` of ``pattern`` in the body decoded as UTF-8 (bad bytes replaced)."""
    return re.search(pattern, decode_text(body)) is not None


def detail(description: str, what: str) -> str:
    """The detail line: ``"HTTP GET 192.168.1.102:80/healthz: status 503"``."""
    return f"{description}: {what}"


def format_seconds(seconds: float) -> str:
    """``1.0`` -> ``"1s"``, ``0.25`` -> ``"0.25s"``."""
    return f"{seconds:g}s"


def timeout_text(seconds: float) -> str:
    return f"timed out after {format_seconds(seconds)}"


def status_text(status: int) -> str:
    return f"status {status}"


def body_mismatch_text(pattern: str) -> str:
    return f"body does not match '{pattern}'"


def os_error_text(exc: OSError) -> str:
    """``strerror`` with a lower-case first letter (``"no route to host"``), else ``str(exc)``."""
    if exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def host_without_port(host: str) -> str:
    """``"a.test:8080"`` -> ``"a.test"``, ``"[::1]:80"`` -> ``"::1"``; else unchanged."""
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host[1:]
    name, sep, port = host.rpartition(":")
    if sep and ":" not in name and port.isdigit():
        return name
    return host


def format_output(data: bytes | bytearray, truncated: bool = False) -> str:
    """Script output for a detail line: decoded, stripped, one line (``" | "`` between lines)."""
    lines = (line.strip() for line in decode_text(data).splitlines())
    text = " | ".join(line for line in lines if line)
    if truncated:
        text += " [truncated]"
    return text


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_text(returncode: int, output: str) -> str:
    """``"exit 2: <output>"`` or ``"killed by signal 9 (SIGKILL): <output>"``."""
    if returncode < 0:
        text = f"killed by signal {-returncode} ({signal_name(-returncode)})"
    else:
        text = f"exit {returncode}"
    return f"{text}: {output}" if output else text
