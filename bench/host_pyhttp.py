"""CPU per HTTP(S) check run in Python, on the host: HTTPS and ``expect_body`` checks (the C
engine takes only plain status-only HTTP).

A backend process (asyncio, on loopback; HTTPS with a throwaway trustme CA) answers every request
with ``200 OK`` and a short body; this process runs ``--checks`` probes through
``healthd.probes.probe_http_within`` (the deadline with its last look, as the scheduler runs
them), ``--concurrency`` at a time, and prints its own CPU time per check (user + system, the
kernel's share of loopback included).  ``--repo`` runs another checkout's probes (an A/B: a
checkout without ``probe_http_within`` runs ``run_probe`` under ``asyncio.timeout``, as its
scheduler did).

    .venv/bin/python bench/host_pyhttp.py --tls --checks 4000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, log, stop_process

SERVER = r"""
import asyncio, ssl, sys
async def handle(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nUP")
        await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def main():
    context = None
    if sys.argv[1] != "-":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[1])
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def run(args: argparse.Namespace, port: int, ca_file: str | None) -> dict[str, Any]:
    sys.path.insert(0, str(args.repo))
    from healthd import probes
    from healthd.checkspec import HttpCheck, Target

    spec = HttpCheck(https=args.tls, ca_file=ca_file, expect_body="UP")
    target = Target("127.0.0.1", port)
    within = getattr(probes, "probe_http_within", None)
    one: Callable[[], Awaitable[Any]]
    if within is not None:

        def one() -> Awaitable[Any]:
            return within(spec, target, 1.0)
    else:

        async def one() -> Any:
            async with asyncio.timeout(1.0):
                return await probes.run_probe(spec, target)

    async def worker(n: int, failures: list[int]) -> None:
        for _ in range(n):
            result = await one()
            if not result.ok:
                failures.append(1)

    failures: list[int] = []
    await asyncio.gather(*(worker(50, failures) for _ in range(args.concurrency)))  # warm-up
    per = args.checks // args.concurrency
    failures.clear()
    cpu0, wall0 = cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker(per, failures) for _ in range(args.concurrency)))
    cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
    done = per * args.concurrency
    return {
        "checks": done,
        "failed": len(failures),
        "cpu_us": 1e6 * cpu / done,
        "per_s": done / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tls", action="store_true", help="HTTPS (verified against a test CA)")
    parser.add_argument("--checks", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose probes run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="healthd-pyhttp-") as tmp:
        cert, ca_file = "-", None
        if args.tls:
            import trustme

            ca = trustme.CA()
            issued = ca.issue_cert("127.0.0.1")
            cert, ca_file = str(Path(tmp) / "server.pem"), str(Path(tmp) / "ca.pem")
            issued.private_key_and_cert_chain_pem.write_to_path(cert)
            ca.cert_pem.write_to_path(ca_file)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, cert], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            socket.create_connection(("127.0.0.1", port)).close()
            out = asyncio.run(run(args, port, ca_file))
        finally:
            stop_process(server)
    kind = "HTTPS" if args.tls else "HTTP"
    log(
        f"{kind} expect_body in Python ({args.repo}): {out['cpu_us']:.0f} µs of CPU per check, "
        f"{out['per_s']:.0f} checks/s, {out['failed']} of {out['checks']} failed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
