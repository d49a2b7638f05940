import asyncio, socket, sys, time, resource
sys.path.insert(0, "/work/main")
h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
from healthd.checkspec import TcpCheck, Target, CheckTiming
from healthd.state import ProbeKey
from healthd.workers import WorkerPool
from healthd.histogram import Histogram, DELAY_BUCKETS_S
from healthd.autoworkers import late_fraction, process_cpu_seconds
N = int(sys.argv[1])
srv = socket.create_server(("127.0.0.1", 0), backlog=4096); srv.setblocking(False)
port = srv.getsockname()[1]
async def drain():
    loop = asyncio.get_running_loop()
    while True:
        try:
            c, _ = srv.accept(); c.close()
        except BlockingIOError:
            await asyncio.sleep(0.005)
async def main():
    keys = [ProbeKey(TcpCheck(port=port), Target("127.0.0.%d" % (1 + i // 250), 10000 + i), CheckTiming(1.0, 1.0)) for i in range(N)]
    hist = Histogram(DELAY_BUCKETS_S)
    pool = WorkerPool(keys, lambda k, r: None, workers=1, on_delays=hist.merge)
    d = asyncio.create_task(drain()); t = asyncio.create_task(pool.run())
    await asyncio.sleep(6)
    for _ in range(2):
        hist.__init__(DELAY_BUCKETS_S)
        pid = pool.pids()[0]; c0 = process_cpu_seconds(pid); t0 = time.monotonic()
        await asyncio.sleep(5)
        share = (process_cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        print(f"N={N} worker share {share:.2f} delays {hist.count} late(>0.1s) {late_fraction(hist):.3f} counts {hist.counts}")
    t.cancel(); d.cancel()
    await asyncio.gather(t, d, return_exceptions=True)
asyncio.run(main())
