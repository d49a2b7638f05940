"""tracemalloc census of a dry-run daemon at N real servers (host, one process)."""

import asyncio
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # bench/
from common import ROOT, Sink, build_sink, status_kb
from configs import healthd_config
from host_rate import BASE_PORT, enter_host_bench

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
TRACE = "--trace" in sys.argv
enter_host_bench()
if TRACE:
    tracemalloc.start(int(os.environ.get("FRAMES", "1")))
from healthd import config as hconfig  # noqa: E402 (after tracemalloc starts)
from healthd.daemon import Daemon, open_port  # noqa: E402


def rss():
    return status_kb(os.getpid(), "VmRSS"), status_kb(os.getpid(), "VmHWM")


with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    sink = Sink(build_sink(ROOT / "bench" / ".build"), "127.0.0.1", BASE_PORT, N, "tcp", work)
    conf = healthd_config(
        work / "h.yaml",
        addr="127.0.0.1",
        base=BASE_PORT,
        n=N,
        check="tcp",
        workdir=work,
        metrics_port=9541,
        workers=0,
    )
    print("imports", rss(), flush=True)
    cfg = hconfig.load(conf) if hasattr(hconfig, "load") else None
    print("config", rss(), flush=True)
    if "--trim-early" in sys.argv:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        print("config trimmed", rss(), flush=True)

    async def go():
        port = await open_port(cfg, True)
        d = Daemon(cfg, port, dry_run=True)
        t = asyncio.create_task(d.run())
        for i in range(8):
            await asyncio.sleep(5)
            if "--trim-each" in sys.argv:
                import ctypes

                ctypes.CDLL("libc.so.6").malloc_trim(0)
            print(f"t={5 * (i + 1)}s completed={d.scheduler.completed}", rss(), flush=True)
        if TRACE:
            gc.collect()
            snap = tracemalloc.take_snapshot()
            snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            if os.environ.get("FRAMES"):
                stats = snap.statistics("traceback")
                for s in stats[:60]:
                    print(f"{s.size / 1e6:7.2f} MB {s.count:8d}")
                    for line in s.traceback.format()[-12:]:
                        print("      ", line)
            for kind in ("filename", "lineno"):
                stats = snap.statistics(kind)
                print("total", sum(s.size for s in stats) / 1e6, "MB")
                for s in stats[:40]:
                    print(f"{s.size / 1e6:7.2f} MB {s.count:8d} {s.traceback}")
        if "--trim" in sys.argv:
            import ctypes

            print("before trim", rss())
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            print("after trim", rss())
        if "--smaps" in sys.argv:
            import collections

            tot = collections.Counter()
            cur = None
            for line in Path("/proc/self/smaps").read_text().splitlines():
                parts = line.split()
                if len(parts) >= 5 and "-" in parts[0] and ":" not in parts[0]:
                    cur = parts[5] if len(parts) > 5 else "[anon]"
                elif parts[0] == "Rss:":
                    tot[cur] += int(parts[1])
            for k, v in tot.most_common(25):
                print(f"{v:8d} kB {k}")
            print("threads", len(os.listdir("/proc/self/task")))
        if "--mstats" in sys.argv:
            gc.collect()
            sys._debugmallocstats()
        d.stopping.set()
        await t

    asyncio.run(go())
    sink.close()
