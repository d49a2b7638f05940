"""The HTTP endpoint: ``/metrics`` (Prometheus text) and ``/healthz`` (ready after a good pass)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST

from healthd import memory
from healthd.serving import HttpVersion11, web

# /metrics goes out as the pieces the exposition comes in, each in slices (views, not copies).
# Joining them, or handing asyncio one large body, costs copies of the whole (aiohttp joins it to
# the headers, asyncio copies what the socket did not take and appends that to its buffer), each
# into fresh memory the size of the exposition (52 MB at 10 000 real servers), where page faults
# are most of the cost.  The handler writes slices until asyncio holds BUFFER_BYTES the socket
# has not taken, then waits (probes run meanwhile): with asyncio's default of 64 kB, the socket
# would sit empty while the loop ran probes between taking a slice and the handler writing the
# next one; with a few MB in hand, asyncio refills it as soon as the client has read.
#
# The pieces are written as they are asked for (``Metrics.pieces``), and the handler gives the
# event loop back every SLICE_S of writing them: written at once, the exposition of 10 000 real
# servers held every probe due for ~0.2 s per scrape.  An exposition larger than CHUNK_BYTES goes
# out as it is written (chunked), a smaller one with its length.  Writing is one scrape at a time
# (the families are filled in place); while writing, a piece is sent only if the socket's buffer
# has room for it.  Pieces written and not yet sent wait in the handler; above HELD_BYTES of them
# the writing waits for the client, PATIENCE_S at most over one scrape: a slow client (the test
# VM's harness) no longer has the whole exposition written into memory ahead of it (the peak RSS
# of a scrape at 10 000 real servers), and one that stops reading holds the other scrapes up by
# PATIENCE_S at most, then the memory it holds is at most its exposition, as before.
CHUNK_BYTES = 1 << 20
BUFFER_BYTES = 8 << 20
HELD_BYTES = 2 << 20
PATIENCE_S = 1.0
SLICE_S = 0.002

# the body, or its pieces in order; a future among them: wait for it (the probe workers' counts)
Exposition = Callable[[], bytes | Iterable[bytes | asyncio.Future[None]]]
Data = bytes | memoryview


def make_app(exposition: Exposition, ready: Callable[[], bool]) -> web.Application:
    one_at_a_time = asyncio.Lock()  # the exposition's families are filled in place

    async def metrics(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        response: web.StreamResponse | None = None
        held: deque[Data] = deque()  # written, not yet sent
        size = 0
        patience = PATIENCE_S
        async with one_at_a_time:
            body = exposition()
            until = time.monotonic() + SLICE_S
            for piece in [body] if isinstance(body, bytes) else body:
                if isinstance(piece, asyncio.Future):
                    await piece
                    until = time.monotonic() + SLICE_S
                    continue
                held.append(piece)
                size += len(piece)
                if time.monotonic() < until:
                    continue
                if response is None and size > CHUNK_BYTES and request.method == "GET":
                    response = await _stream(request, headers)
                if response is not None:
                    room = _room(request)
                    await _send(response, held, room)
                    patience = await _wait_for_client(response, held, room, patience)
                await asyncio.sleep(0)  # the probes due meanwhile
                until = time.monotonic() + SLICE_S
        if response is None and (size <= CHUNK_BYTES or request.method != "GET"):
            return web.Response(body=b"".join(held), headers=headers)  # HEAD: no body
        if response is None:
            response = await _stream(request, headers)
        await _send(response, held, lambda: True)
        await response.write_eof()
        held.clear()
        memory.give_back()  # the scrape's pieces were freed: their pages go back to the system
        return response

    async def healthz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready: no successful reconcile pass yet\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def _stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    if request.version >= HttpVersion11:
        response.enable_chunked_encoding()  # HTTP/1.0: the body ends where the connection does
    await response.prepare(request)
    if request.transport is not None:
        request.transport.set_write_buffer_limits(high=BUFFER_BYTES)
    return response


def _room(request: web.Request) -> Callable[[], bool]:
    """Whether the socket's buffer can take a piece without the write waiting for the client."""
    transport = request.transport
    if transport is None:
        return lambda: False
    return lambda: transport.get_write_buffer_size() < BUFFER_BYTES // 2


async def _wait_for_client(
    response: web.StreamResponse,
    held: deque[Data],
    room: Callable[[], bool],
    patience_s: float,
) -> float:
    """While more than HELD_BYTES wait to be sent, send as the client reads, for at most
    ``patience_s``; what is left of it."""
    while patience_s > 0 and sum(map(len, held)) > HELD_BYTES:
        began = time.monotonic()
        await asyncio.sleep(SLICE_S)  # the client reads (and the probes run) meanwhile
        await _send(response, held, room)
        patience_s -= time.monotonic() - began
    return patience_s


async def _send(
    response: web.StreamResponse, pieces: deque[Data], room: Callable[[], bool]
) -> None:
    """Send from the left while ``room()``, in slices of at most CHUNK_BYTES (views, not
    copies; the rest of a larger piece goes back to the left)."""
    while pieces and room():
        piece = pieces.popleft()
        if len(piece) > CHUNK_BYTES:
            view = memoryview(piece)
            pieces.appendleft(view[CHUNK_BYTES:])
            piece = view[:CHUNK_BYTES]
        await response.write(piece)


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
