"""Memory per TCP probe whose connect is in progress (tracemalloc), 1000 at once."""

import asyncio
import contextlib
import gc
import random
import resource
import socket
import sys
import tracemalloc

from healthd.checkspec import CheckTiming, Target, TcpCheck
from healthd.scheduler import Scheduler
from healthd.state import ProbeKey


class Lowest(random.Random):
    def uniform(self, a, b):
        return a


async def main(n: int) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    await asyncio.sleep(0.05)
    keys = [
        ProbeKey(TcpCheck(port=port), Target("127.0.0.1", 1000 + i), CheckTiming(30.0, 20.0))
        for i in range(n)
    ]
    s = Scheduler(keys, lambda k, r: None, rng=Lowest(), max_concurrent=100000)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    task = asyncio.create_task(s.run())
    await asyncio.sleep(0.5)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    print(f"in flight {s.in_flight}: {used / n:.0f} bytes per probe (slots and heap included)")
    tracemalloc.take_snapshot()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    tracemalloc.stop()


resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
