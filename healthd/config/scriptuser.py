"""Post-processing of a parsed config: script checks run as ``scripts.user``.  Pure.

The user is part of a script check's spec (and so of its probe's identity): a reload that
changes ``scripts.user`` restarts the script checks, and the probe needs no other context.
"""

from __future__ import annotations

from dataclasses import replace

from healthd.checkspec import ScriptCheck
from healthd.config.types import CheckConfig, Config, RealServerConfig, VirtualServerConfig


def with_scripts_user(config: Config) -> Config:
    """``config`` with ``scripts.user`` set on every script check of every real server.

    What has no script check to change keeps its object (a config of 10 000 real servers with
    TCP checks is not copied).
    """
    user = config.scripts.user

    def check(c: CheckConfig) -> CheckConfig:
        if isinstance(c.spec, ScriptCheck) and c.spec.user != user:
            return replace(c, spec=replace(c.spec, user=user))
        return c

    def real_server(rs: RealServerConfig) -> RealServerConfig:
        checks = tuple(check(c) for c in rs.checks)
        same = all(new is old for new, old in zip(checks, rs.checks, strict=True))
        return rs if same else replace(rs, checks=checks)

    def virtual_server(vs: VirtualServerConfig) -> VirtualServerConfig:
        real_servers = tuple(real_server(rs) for rs in vs.real_servers)
        same = all(new is old for new, old in zip(real_servers, vs.real_servers, strict=True))
        return vs if same else replace(vs, real_servers=real_servers)

    virtual_servers = tuple(virtual_server(vs) for vs in config.virtual_servers)
    if all(new is old for new, old in zip(virtual_servers, config.virtual_servers, strict=True)):
        return config
    return replace(config, virtual_servers=virtual_servers)
