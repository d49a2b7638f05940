"""Post-processing of a parsed config: script checks run as ``scripts.user``.  Pure.

The user is part of a script check's spec (and so of its probe's identity): a reload that
changes ``scripts.user`` restarts the script checks, and the probe needs no other context.
"""

from __future__ import annotations

from dataclasses import replace

from healthd.checkspec import ScriptCheck
from healthd.config.types import CheckConfig, Config


def with_scripts_user(config: Config) -> Config:
    """``config`` with ``scripts.user`` set on every script check of every real server."""
    user = config.scripts.user

    def check(c: CheckConfig) -> CheckConfig:
        if isinstance(c.spec, ScriptCheck) and c.spec.user != user:
            return replace(c, spec=replace(c.spec, user=user))
        return c

    virtual_servers = tuple(
        replace(
            vs,
            real_servers=tuple(
                replace(rs, checks=tuple(check(c) for c in rs.checks)) for rs in vs.real_servers
            ),
        )
        for vs in config.virtual_servers
    )
    return replace(config, virtual_servers=virtual_servers)
