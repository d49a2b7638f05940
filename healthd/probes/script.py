"""Script probe: run an argv (no shell) in its own session; exit 0 means healthy.

The process handling (capped output, process-group kill on cancellation, no orphan left behind,
running as ``scripts.user``) lives in ``healthd.procs``, shared with notify commands.  When
healthd runs as root and the check has a ``user`` (``scripts.user``, default ``nobody``), the
script runs as that user with its primary group and no supplementary groups.
"""

from __future__ import annotations

import time

from healthd import procs
from healthd.checkspec import ProbeResult, Reason, ScriptCheck, Target
from healthd.probes.matchers import exit_text, format_output, os_error_text
from healthd.probes.result import complete


def script_env(target: Target) -> dict[str, str]:
    """The whole environment of a check script: a minimal base plus the target."""
    return {
        **procs.base_env(),
        "HEALTHD_REAL_SERVER_ADDRESS": target.address,
        "HEALTHD_REAL_SERVER_PORT": str(target.port),
        "HEALTHD_VIRTUAL_SERVER_ADDRESS": target.vs_address,
        "HEALTHD_VIRTUAL_SERVER_PORT": str(target.vs_port),
        "HEALTHD_VIRTUAL_SERVER_PROTOCOL": target.vs_protocol,
        "HEALTHD_VIRTUAL_SERVER_FWMARK": str(target.vs_fwmark),
    }


async def probe_script(spec: ScriptCheck, target: Target) -> ProbeResult:
    """Run ``spec.command`` once; ok iff it exits 0. Leaves no process behind, ever."""
    start = time.monotonic()
    try:
        done = await procs.run(
            spec.command, env=script_env(target), limit=spec.max_output_bytes, user=spec.user
        )
    except procs.UnknownUser as exc:
        return complete(spec, target, start, Reason.ERROR, str(exc))
    except OSError as exc:
        return complete(spec, target, start, Reason.ERROR, f"cannot run: {os_error_text(exc)}")
    code = done.returncode
    reason = Reason.OK if code == 0 else Reason.SIGNAL if code < 0 else Reason.EXIT
    return complete(
        spec, target, start, reason, exit_text(code, format_output(done.output, done.truncated))
    )
