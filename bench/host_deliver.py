"""The daemon's main process taking in results from probe workers, on the host, no I/O.

With ``probes.workers`` the main process does, per result: unpickle its share of a batch,
look the probe up, run the health book, record the metrics, log a change.  In the VM at
N = 1000 that is the daemon's limit (docs/benchmarks.md, sixth pass).  This builds a real
``Daemon`` (dry-run) on a config of N real servers, a ``WorkerPool`` that is not started, and
feeds it batches the way a worker frames them: all OK, then a share failing (state changes,
reconciler pokes, logs).  Prints microseconds of CPU per result delivered (best of
``--repeat``), and with ``--profile`` the top of a cProfile.

    .venv/bin/python bench/host_deliver.py --n 1000 --batches 200
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import print_profile
from configs import dry_run_daemon

from healthd.checkspec import ProbeResult, Reason
from healthd.probeworker import _Batcher
from healthd.workers import WorkerPool


class _Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(data[4:])  # without the length prefix


def frames(pool: WorkerPool, batches: int, fail_every: int) -> list[bytes]:
    """What a worker sends (its own ``_Batcher``): each probe in turn, 64 results a batch, each
    with its schedule delay; with ``fail_every`` every k-th probe fails every other round."""
    sink = _Sink()
    batcher = _Batcher(sink, [])
    batcher._ids = dict(pool._ids)
    keys = sorted(pool._ids, key=pool._ids.__getitem__)
    ok = ProbeResult(True, Reason.OK, "connected", 0.0004)
    refused = ProbeResult(False, Reason.REFUSED, "connection refused", 0.0004)
    i = 0
    for _ in range(batches):
        for _ in range(64):
            key = keys[i % len(keys)]
            fail = fail_every and (i // len(keys)) % 2 == 1 and (i % len(keys)) % fail_every == 0
            batcher.on_delay(0.001 * (i % 7))
            batcher.on_result(key, refused if fail else ok)
            i += 1
        batcher.flush()
    return sink.frames


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = dry_run_daemon(Path(tmp), n=args.n, check=args.check, workers=1)
        pool = daemon.scheduler
        assert isinstance(pool, WorkerPool)
        pool._running = True
        pool.update(daemon.book.probes)
        worker = pool._workers[0]
        data = frames(pool, args.batches, args.fail_every)
        results = sum(len(pickle.loads(d)[1]) for d in data)

        def deliver() -> None:
            for d in data:
                _in_flight, rows, delays, _drained, _progressed = pickle.loads(d)
                pool._deliver(worker, rows, delays)

        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.process_time()
            deliver()
            best = min(best, time.process_time() - t0)
        print(
            f"n={args.n} check={args.check} fail_every={args.fail_every}: "
            f"{results} results, {best / results * 1e6:.1f} us CPU per result (best of "
            f"{args.repeat})"
        )
        if args.profile:
            print_profile(deliver)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--check", choices=["tcp", "http"], default="tcp")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--fail-every", type=int, default=0, help="every k-th probe alternates failing/OK"
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
