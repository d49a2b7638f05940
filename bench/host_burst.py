"""What a burst of state changes costs the daemon's main process, on the host, no sockets.

A real ``Daemon`` (dry-run table) on a config of N real servers, every check settled up; then K
checks fail twice in a row (fall 2: K real servers go down) and succeed twice (back up), as in a
burst of false timeouts when the director's CPU is saturated, and one reconcile pass. Prints the
CPU milliseconds of the downs, the ups and the pass, and with ``--profile`` the top of a
cProfile of it all.

    .venv/bin/python bench/host_burst.py --n 5000 --k 113
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs import dry_run_daemon

from healthd.checkspec import ProbeResult, Reason


async def run(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)  # the changes' INFO lines are not what is measured
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        daemon = dry_run_daemon(
            work, n=args.n, check="tcp", workers=0, events_file=work / "events.jsonl"
        )
        ok = ProbeResult(True, Reason.OK, "connected", 0.0004)
        timed_out = ProbeResult(False, Reason.TIMEOUT, "timed out after 0.9s", 0.9)
        keys = list(daemon.book.probes)
        for _ in range(3):
            for key in keys:
                daemon.on_result(key, ok)
        await daemon.reconciler.reconcile_once()
        burst = keys[: args.k]
        profile = cProfile.Profile() if args.profile else None
        if profile:
            profile.enable()
        t0 = time.process_time()
        for result in (timed_out, timed_out):
            for key in burst:
                daemon.on_result(key, result)
        t1 = time.process_time()
        for result in (ok, ok):
            for key in burst:
                daemon.on_result(key, result)
        t2 = time.process_time()
        await daemon.reconciler.reconcile_once()
        t3 = time.process_time()
        if profile:
            profile.disable()
        print(
            f"n={args.n} k={args.k}: {args.k} real servers down {1e3 * (t1 - t0):.1f} ms, "
            f"back up {1e3 * (t2 - t1):.1f} ms, then a reconcile pass {1e3 * (t3 - t2):.1f} ms "
            "of CPU"
        )
        if profile:
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--k", type=int, default=113)
    parser.add_argument("--profile", action="store_true")
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
