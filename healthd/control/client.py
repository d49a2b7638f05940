"""The command-line side of the control API: stdlib HTTP over the unix socket, one clear line
for every error."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class ClientError(Exception):
    """One sentence for the operator."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def request(
    path: str, method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    conn = _UnixConnection(path, timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, url, body=payload, headers=headers)
        response = conn.getresponse()
        data = json.loads(response.read() or b"{}")
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ClientError(f"healthd is not running (no control socket answers at {path})") from exc
    except PermissionError as exc:
        raise ClientError(f"permission denied: {path} (the control socket is root-only)") from exc
    except TimeoutError as exc:
        raise ClientError(f"healthd did not answer within {timeout:g}s on {path}") from exc
    except OSError as exc:
        raise ClientError(f"cannot talk to healthd on {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ClientError(f"healthd sent a malformed answer on {path}") from exc
    finally:
        conn.close()
    if not isinstance(data, dict):
        raise ClientError(f"healthd sent a malformed answer on {path}")
    if response.status >= 400 or data.get("ok") is False:
        raise ClientError(
            str(data.get("error") or data.get("message") or f"HTTP {response.status}")
        )
    return data
