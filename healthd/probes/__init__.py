"""Probes: one pass of one check against one target, returning exactly one ``ProbeResult``.

The caller enforces the timeout by cancellation::

    try:
        async with asyncio.timeout(timing.timeout_s):
            result = await run_probe(spec, target)
    except TimeoutError:
        result = timeout_result(spec, target, timing.timeout_s)

HTTP(S) checks get a last look at their socket before they are timed out
(``probe_http_within``, ``lastlook.py``): an answer that came in time counts even if the loop
had not read it yet.

Probes clean up fully when cancelled (no task, socket or process is left behind) and never raise
for a backend's fault.
"""

from __future__ import annotations

from healthd.checkspec import (
    CheckSpec,
    HttpCheck,
    ProbeResult,
    Reason,
    ScriptCheck,
    Target,
    TcpCheck,
)
from healthd.probes.http import probe_http
from healthd.probes.lastlook import within
from healthd.probes.matchers import detail, timeout_text
from healthd.probes.script import probe_script
from healthd.probes.tcp import probe_tcp

__all__ = [
    "probe_http",
    "probe_http_within",
    "probe_script",
    "probe_tcp",
    "run_probe",
    "timeout_result",
]


async def run_probe(spec: CheckSpec, target: Target) -> ProbeResult:
    """Run the probe for ``spec`` once against ``target``."""
    if isinstance(spec, TcpCheck):
        return await probe_tcp(spec, target)
    if isinstance(spec, HttpCheck):
        return await probe_http(spec, target)
    if isinstance(spec, ScriptCheck):
        return await probe_script(spec, target)
    raise TypeError(f"unknown check spec {spec!r}")


def timeout_result(spec: CheckSpec, target: Target, timeout_s: float) -> ProbeResult:
    """The result of a probe that the caller cancelled after ``timeout_s``."""
    return ProbeResult(
        ok=False,
        reason=Reason.TIMEOUT,
        detail=detail(spec.describe(target), timeout_text(timeout_s)),
        duration_s=timeout_s,
    )


async def probe_http_within(spec: HttpCheck, target: Target, timeout_s: float) -> ProbeResult:
    """One HTTP(S) probe with its timeout and the last look at its socket (``lastlook.py``)."""
    return await within(
        timeout_s,
        lambda look: probe_http(spec, target, look),
        lambda: timeout_result(spec, target, timeout_s),
    )
