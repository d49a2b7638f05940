"""/metrics sends the exposition's pieces as one body, exactly; /healthz follows readiness."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST

from healthd.api import CHUNK_BYTES, make_app

LARGE = [b"# HELP a x\n", bytes(range(256)) * (CHUNK_BYTES // 100), b"", b"z" * CHUNK_BYTES, b"\n"]


async def _get(
    pieces: bytes | Sequence[bytes], method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    app = make_app(lambda: pieces, lambda: True)
    async with TestClient(TestServer(app)) as client:
        response = await client.request(method, "/metrics")
        return response.status, dict(response.headers), await response.read()


async def test_a_large_exposition_goes_out_whole_in_order() -> None:
    status, headers, body = await _get(LARGE)
    assert status == 200
    assert body == b"".join(LARGE)
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in headers


async def test_a_small_exposition_and_a_single_body() -> None:
    for pieces in ([b"a 1\n", b"b 2\n"], b"a 1\n", b"x" * (3 * CHUNK_BYTES + 1)):
        status, headers, body = await _get(pieces)
        expected = pieces if isinstance(pieces, bytes) else b"".join(pieces)
        assert (status, body, headers["Content-Length"]) == (200, expected, str(len(expected)))


async def test_head_has_no_body() -> None:
    status, headers, body = await _get(LARGE, "HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST


async def test_healthz_follows_readiness() -> None:
    ready = False
    app = make_app(lambda: [b""], lambda: ready)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 503
        ready = True
        assert (await client.get("/healthz")).status == 200
