"""The one place that builds a ``ProbeResult`` (in the style of seesaw's ``complete()``)."""

from __future__ import annotations

import time

from healthd.checkspec import CheckSpec, ProbeResult, Reason, Target
from healthd.probes.matchers import UNREACHABLE_ERRNOS, detail, os_error_text


def complete(
    spec: CheckSpec,
    target: Target,
    start: float,
    reason: Reason,
    what: str,
    http_status: int | None = None,
) -> ProbeResult:
    """Finish a probe begun at ``start`` (``time.monotonic()``): ok iff ``reason`` is OK."""
    return ProbeResult(
        ok=reason is Reason.OK,
        reason=reason,
        detail=detail(spec.describe(target), what),
        duration_s=time.monotonic() - start,
        http_status=http_status,
    )


def classify_os_error(exc: OSError) -> tuple[Reason, str]:
    """Map a socket error to a reason and its wording."""
    if isinstance(exc, ConnectionRefusedError):
        return Reason.REFUSED, "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return Reason.RESET, "connection reset"
    if exc.errno in UNREACHABLE_ERRNOS:
        return Reason.UNREACHABLE, os_error_text(exc)
    return Reason.ERROR, os_error_text(exc)
