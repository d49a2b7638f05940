"""The daemon's small persistent state: operator overrides and what a reload is retiring.

Written atomically (a temporary file in the same directory, fsync, rename, fsync of the
directory), so a crash leaves the old or the new file, never a torn one.  A missing file is an
empty state; an unreadable one is logged and treated as empty (the daemon must still start).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from healthd.model import Protocol, VirtualServerKey
from healthd.overrides import Override

log = logging.getLogger("healthd.state")
VERSION = 1


@dataclass
class SavedState:
    overrides: dict[tuple[str, str], Override] = field(default_factory=dict)
    retiring_virtual_servers: list[VirtualServerKey] = field(default_factory=list)


def _key_to_json(key: VirtualServerKey) -> dict[str, Any]:
    return {
        "family": key.family,
        "protocol": key.protocol.value if key.protocol else None,
        "address": key.address,
        "port": key.port,
        "fwmark": key.fwmark,
    }


def _key_from_json(data: dict[str, Any]) -> VirtualServerKey:
    protocol = Protocol(data["protocol"]) if data.get("protocol") else None
    return VirtualServerKey(
        int(data["family"]), protocol, str(data["address"]), int(data["port"]), int(data["fwmark"])
    )


def encode(state: SavedState) -> str:
    return json.dumps(
        {
            "version": VERSION,
            "overrides": [
                {"virtual_server": vs, "real_server": rs, **o.to_json()}
                for (vs, rs), o in sorted(state.overrides.items())
            ],
            "retiring_virtual_servers": [_key_to_json(k) for k in state.retiring_virtual_servers],
        },
        indent=2,
    )


def decode(text: str) -> SavedState:
    data = json.loads(text)
    if data.get("version") != VERSION:
        raise ValueError(f"unknown state file version {data.get('version')!r}")
    state = SavedState()
    for item in data.get("overrides", []):
        state.overrides[(item["virtual_server"], item["real_server"])] = Override.from_json(item)
    state.retiring_virtual_servers = [
        _key_from_json(k) for k in data.get("retiring_virtual_servers", [])
    ]
    return state


def load(path: str) -> SavedState:
    try:
        with open(path, encoding="utf-8") as handle:
            return decode(handle.read())
    except FileNotFoundError:
        return SavedState()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("state file %s is unreadable (%s): starting without saved overrides", path, exc)
        return SavedState()


def save(path: str, state: SavedState) -> None:
    """Write atomically; raises OSError (the caller logs it and keeps running)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(encode(state))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
