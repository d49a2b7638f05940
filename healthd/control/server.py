"""The control API: aiohttp on a unix socket (mode 0600, root only), optionally TCP with a token.

    GET  /v1/status                      the daemon's view (healthd.status)
    POST /v1/reload                      reload the config file (a diff; invalid: nothing changes)
    POST /v1/override {virtual_server, real_server, action: drain|maint|ready|weight,
                       weight?, ttl_s?, reason?}
Errors are JSON {"ok": false, "error": "one clear sentence"} with 400/403/404.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from healthd.config.types import ControlConfig
from healthd.serving import web

log = logging.getLogger("healthd.control")
ACTIONS = ("drain", "maint", "ready", "weight")


class Controller(Protocol):
    def status(self) -> dict[str, Any]: ...

    async def reload(self) -> tuple[bool, str]: ...

    def override(
        self,
        virtual_server: str,
        real_server: str,
        action: str,
        *,
        owner: str,
        weight: int | None = None,
        ttl_s: float | None = None,
        reason: str = "",
    ) -> str: ...


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def peer_owner(request: web.Request) -> str:
    """Who is asking: the unix peer's user name (SO_PEERCRED), or "token" over TCP."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return "token"
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def make_app(controller: Controller, token: str | None = None) -> web.Application:
    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if token is not None:
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(sent.encode(), token.encode()):
                return web.json_response({"ok": False, "error": "bad or missing token"}, status=403)
        try:
            return await handler(request)
        except ControlError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=exc.status)
        except LookupError as exc:
            return web.json_response({"ok": False, "error": exc.args[0]}, status=404)
        except ValueError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(controller.status())

    async def reload(_: web.Request) -> web.Response:
        ok, message = await controller.reload()
        return web.json_response({"ok": ok, "message": message}, status=200 if ok else 400)

    async def override(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as exc:
            raise ControlError(400, "the request body must be JSON") from exc
        if not isinstance(body, dict):
            raise ControlError(400, "the request body must be a JSON object")
        action = body.get("action")
        if action not in ACTIONS:
            raise ControlError(400, f"action must be one of {', '.join(ACTIONS)}")
        vs, rs = body.get("virtual_server"), body.get("real_server")
        if not isinstance(vs, str) or not isinstance(rs, str):
            raise ControlError(400, "virtual_server and real_server are required")
        weight = body.get("weight")
        if action == "weight" and (not isinstance(weight, int) or not 0 <= weight <= 65535):
            raise ControlError(400, "weight must be an integer from 0 to 65535")
        ttl = body.get("ttl_s")
        if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
            raise ControlError(400, "ttl_s must be a positive number of seconds")
        message = controller.override(
            vs,
            rs,
            action,
            owner=peer_owner(request),
            weight=weight,
            ttl_s=None if ttl is None else float(ttl),
            reason=str(body.get("reason") or ""),
        )
        return web.json_response({"ok": True, "message": message})

    app = web.Application(middlewares=[errors])
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/reload", reload)
    app.router.add_post("/v1/override", override)
    return app


def _claim_socket_path(path: str) -> None:
    """Make the directory (0700) and remove a stale socket; refuse if a daemon answers there."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: nobody listens
        return
    finally:
        probe.close()
    raise OSError(f"another healthd is already listening on {path}")


async def start(controller: Controller, config: ControlConfig) -> list[web.AppRunner]:
    """Serve the control API; raises OSError with a clear message if it cannot."""
    runners: list[web.AppRunner] = []
    runner = web.AppRunner(make_app(controller), access_log=None, handle_signals=False)
    await runner.setup()
    runners.append(runner)
    _claim_socket_path(config.socket)
    old_umask = os.umask(0o177)
    try:
        await web.UnixSite(runner, config.socket).start()
    finally:
        os.umask(old_umask)
    os.chmod(config.socket, 0o600)
    if config.listen_host is not None and config.token_file is not None:
        with open(config.token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
        if len(token) < 16:
            raise OSError(f"{config.token_file}: the token must be at least 16 characters")
        tcp = web.AppRunner(make_app(controller, token), access_log=None, handle_signals=False)
        await tcp.setup()
        runners.append(tcp)
        await web.TCPSite(tcp, config.listen_host, config.listen_port).start()
    log.info("control API on %s", config.socket)
    return runners


async def stop(runners: list[web.AppRunner], config: ControlConfig) -> None:
    for runner in runners:
        await runner.cleanup()
    with contextlib.suppress(OSError):
        os.unlink(config.socket)
