"""Configuration: ``parse_text`` is pure; ``load`` only reads the file."""

from __future__ import annotations

from healthd.config.parse import parse_text
from healthd.config.source import ConfigError, ConfigIssue
from healthd.config.types import (
    CheckConfig,
    Config,
    MetricsConfig,
    OnStop,
    RealServerConfig,
    ReconcileConfig,
    VirtualServerConfig,
)


def load(path: str) -> Config:
    """Read and validate a config file; raises ``ConfigError`` (also for an unreadable file)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigIssue(path, 1, "", f"cannot read: {reason}")]) from exc
    return parse_text(text, path)


__all__ = [
    "CheckConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "MetricsConfig",
    "OnStop",
    "RealServerConfig",
    "ReconcileConfig",
    "VirtualServerConfig",
    "load",
    "parse_text",
]
