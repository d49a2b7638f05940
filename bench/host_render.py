"""What one /metrics scrape costs the daemon at N real servers, on the host, no sockets.

``bench/host_scrape.py`` measures a scrape as Prometheus sees it (a real daemon, real probes,
HTTP); this measures only the rendering, so a change to it can be compared in seconds: a real
``Daemon`` (dry-run) on a config of N real servers, every probe given results (a share of
them failing, so every family has values), one reconcile pass on the dry-run table, then
``Metrics.exposition()`` ``--scrapes`` times with new results between scrapes, as between two
real scrapes.  Prints CPU milliseconds per scrape (first, then min/median/max of the rest),
the size, and with ``--profile`` the top of a cProfile of one scrape.

    .venv/bin/python bench/host_render.py --n 10000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import print_profile
from configs import dry_run_daemon

from healthd.checkspec import ProbeResult, Reason
from healthd.daemon import Daemon


def feed(daemon: Daemon, round_: int, fail_every: int) -> None:
    """One result for every probe; every ``fail_every``-th probe fails (other rounds)."""
    ok = ProbeResult(True, Reason.OK, "connected", 0.0004 + 0.0001 * (round_ % 3))
    refused = ProbeResult(False, Reason.REFUSED, "connection refused", 0.0002)
    for i, key in enumerate(list(daemon.book.probes)):
        fail = fail_every and i % fail_every == 0 and round_ % 2 == 1
        daemon.on_result(key, refused if fail else ok)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = dry_run_daemon(
            Path(tmp), n=args.n, check=args.check, workers=0, check_duration=args.check_duration
        )
        feed(daemon, 0, args.fail_every)
        await daemon.reconciler.reconcile_once()
        times, size = [], 0
        for i in range(args.scrapes):
            feed(daemon, i + 1, args.fail_every)
            t0 = time.process_time()
            parts = daemon.metrics.exposition()
            times.append(time.process_time() - t0)
            size = sum(len(p) for p in parts)
        rest = times[1:] or times
        print(
            f"n={args.n} {args.check} check_duration={args.check_duration}: {size / 1e6:.1f} MB, "
            f"first scrape {times[0] * 1e3:.0f} ms CPU, then min/median/max "
            f"{min(rest) * 1e3:.0f}/{statistics.median(rest) * 1e3:.0f}/{max(rest) * 1e3:.0f} ms"
        )
        if args.profile:
            feed(daemon, 0, args.fail_every)
            print_profile(daemon.metrics.exposition)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--check", choices=["tcp", "http"], default="tcp")
    parser.add_argument("--scrapes", type=int, default=10)
    parser.add_argument("--fail-every", type=int, default=50)
    parser.add_argument(
        "--check-duration",
        default="per_real_server",
        choices=["per_real_server", "per_virtual_server", "off"],
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
