"""The event log: one JSON object per line for every state change, kernel operation, override,
reload and notify command (config ``events.file``: a path, ``-`` for stdout, or off).

Each line has ``ts`` (RFC 3339, UTC, milliseconds), ``event`` and the event's fields, e.g.::

    {"ts": "2024-05-01T12:00:00.123Z", "event": "state_change", "virtual_server": "web", ...}

A file is opened for appending (O_APPEND) and each line is written with one ``write`` as it
happens (no buffering to lose); ``reopen()`` (on SIGHUP) starts writing to the path again, so
logrotate can move the file away.  Writes happen on the event loop: a line is a few hundred bytes
into the page cache.  A failed open or write never stops the daemon: the event is dropped and
counted (``dropped``), and logged once until a write succeeds again.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteVirtualServer,
    EditRealServer,
    EditVirtualServer,
    Op,
)
from healthd.reconciler import op_kind

log = logging.getLogger("healthd.events")


def timestamp(now: datetime | None = None) -> str:
    """``2024-05-01T12:00:00.123Z``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def op_fields(op: Op) -> dict[str, Any]:
    """The ``kernel_op`` fields that describe ``op``."""
    real_server: str | None = None
    weight: int | None = None
    forwarding: str | None = None
    if isinstance(op, AddVirtualServer | EditVirtualServer):
        virtual_server = str(op.spec.key)
    elif isinstance(op, DeleteVirtualServer):
        virtual_server = str(op.key)
    elif isinstance(op, AddRealServer | EditRealServer):
        virtual_server = str(op.virtual_server)
        real_server = str(op.spec.key)
        weight = op.spec.weight
        forwarding = op.spec.forwarding.value
    else:
        virtual_server = str(op.virtual_server)
        real_server = str(op.key)
    return {
        "op": op_kind(op),
        "virtual_server": virtual_server,
        "real_server": real_server,
        "weight": weight,
        "forwarding": forwarding,
        "reason": op.reason,
    }


class EventLog:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.dropped = 0  # events lost to open or write errors
        self._fd: int | None = None
        self._failing = False
        self._open()

    def _open(self) -> None:
        if self.path is None or self.path == "-":
            return
        try:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
            )
        except OSError as exc:
            self._fail(f"cannot open the event log {self.path}: {exc.strerror or exc}")

    def _fail(self, message: str) -> None:
        if not self._failing:
            log.error("%s; events are dropped until it works again (SIGHUP reopens it)", message)
            self._failing = True

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def reopen(self, path: str | None = None, *, change: bool = False) -> None:
        """Close and open again (after log rotation), or switch to ``path`` when ``change``."""
        self.close()
        if change:
            self.path = path
        self._failing = False
        self._open()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _write(self, data: bytes) -> None:
        """The whole line in one ``write`` (O_APPEND: lines of concurrent writers never mix)."""
        if self.path == "-":
            sys.stdout.write(data.decode())
            sys.stdout.flush()
            return
        if self._fd is None:
            raise OSError("not open")
        while data:
            data = data[os.write(self._fd, data) :]

    def emit(self, event: str, **fields: Any) -> None:
        """Write one line; never raises."""
        if self.path is None:
            return
        line = json.dumps({"ts": timestamp(), "event": event, **fields}, default=str) + "\n"
        if self._fd is None and self.path != "-":
            self.dropped += 1
            return
        try:
            self._write(line.encode())
        except (OSError, ValueError) as exc:  # ValueError: stdout closed
            self.dropped += 1
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self._fail(f"writing the event log {self.path} failed: {why}")
            return
        if self._failing:
            log.info(
                "the event log %s works again (%d events were dropped)", self.path, self.dropped
            )
            self._failing = False

    # ---- the events ---------------------------------------------------------------------------

    def state_change(
        self,
        *,
        virtual_server: str,
        real_server: str,
        check: str | None,
        before: str,
        after: str,
        reason: str,
    ) -> None:
        """A check (``check`` set) or a whole real server (``check`` None) changed state."""
        self.emit(
            "state_change",
            virtual_server=virtual_server,
            real_server=real_server,
            check=check,
            **{"from": before, "to": after},
            reason=reason,
        )

    def kernel_op(self, op: Op, *, ok: bool, error: str | None = None, dry_run: bool) -> None:
        self.emit("kernel_op", **op_fields(op), dry_run=dry_run, ok=ok, error=error)

    def override(
        self,
        *,
        virtual_server: str,
        real_server: str,
        action: str,
        weight: int | None = None,
        owner: str | None = None,
        reason: str | None = None,
        expires: str | None = None,
    ) -> None:
        """An operator override was set, changed, expired or cleared (``action``)."""
        self.emit(
            "override",
            virtual_server=virtual_server,
            real_server=real_server,
            action=action,
            weight=weight,
            owner=owner,
            reason=reason,
            expires=expires,
        )

    def reload(self, *, ok: bool, error: str | None = None, **fields: Any) -> None:
        self.emit("reload", ok=ok, error=error, **fields)

    def notify(self, *, command: list[str], exit: int | None, output: str, **fields: Any) -> None:
        """A notify command finished (``exit`` None: it could not run or timed out)."""
        self.emit("notify", command=command, exit=exit, output=output, **fields)
