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
        return rs if _same(checks, rs.checks) else replace(rs, checks=checks)

    def virtual_server(vs: VirtualServerConfig) -> VirtualServerConfig:
        servers = tuple(real_server(rs) for rs in vs.real_servers)
        return vs if _same(servers, vs.real_servers) else replace(vs, real_servers=servers)

    virtual_servers = tuple(virtual_server(vs) for vs in config.virtual_servers)
    if _same(virtual_servers, config.virtual_servers):
        return config
    return replace(config, virtual_servers=virtual_servers)


def _same(new: tuple[object, ...], old: tuple[object, ...]) -> bool:
    """Every item of ``new`` is the very object of ``old`` at its place."""
    return all(a is b for a, b in zip(new, old, strict=True))
