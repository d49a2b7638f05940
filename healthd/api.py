"""The HTTP endpoint: ``/metrics`` (Prometheus text) and ``/healthz`` (ready after a good pass)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

# /metrics goes out as the pieces the exposition comes in, each in slices (views, not copies).
# Joining them, or handing asyncio one large body, costs copies of the whole (aiohttp joins it to
# the headers, asyncio copies what the socket did not take and appends that to its buffer), each
# into fresh memory the size of the exposition (52 MB at 10 000 real servers), where page faults
# are most of the cost.  The handler writes slices until asyncio holds BUFFER_BYTES the socket
# has not taken, then waits (probes run meanwhile): with asyncio's default of 64 kB, the socket
# would sit empty while the loop ran probes between taking a slice and the handler writing the
# next one; with a few MB in hand, asyncio refills it as soon as the client has read.
CHUNK_BYTES = 1 << 20
BUFFER_BYTES = 8 << 20

Exposition = Callable[[], bytes | Sequence[bytes]]  # the body, or its pieces in order


def make_app(exposition: Exposition, ready: Callable[[], bool]) -> web.Application:
    async def metrics(request: web.Request) -> web.StreamResponse:
        body = exposition()
        parts = [body] if isinstance(body, bytes) else body
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        size = sum(map(len, parts))
        if request.method != "GET" or size <= CHUNK_BYTES:  # HEAD: aiohttp leaves the body out
            return web.Response(body=b"".join(parts), headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_length = size
        await response.prepare(request)
        if request.transport is not None:
            request.transport.set_write_buffer_limits(high=BUFFER_BYTES)
        for part in parts:
            view = memoryview(part)
            for start in range(0, len(part), CHUNK_BYTES):
                await response.write(view[start : start + CHUNK_BYTES])
        await response.write_eof()
        return response

    async def healthz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready: no successful reconcile pass yet\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
