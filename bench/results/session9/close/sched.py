"""CPU per TCP check of healthd's Scheduler alone against veth backends (pending connects)."""
import asyncio, os, sys, time
sys.path.insert(0, os.environ.get("HEALTHD_SRC", "/work/main"))
import resource
h=resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
from healthd.checkspec import TcpCheck, Target, CheckTiming
from healthd.state import ProbeKey
from healthd.scheduler import Scheduler
import healthd.scheduler as _sched
if os.environ.get("EARLY_S"):
    _sched.EARLY_S = float(os.environ["EARLY_S"])
    _sched.EARLY_FRACTION = float(os.environ.get("EARLY_FRACTION", "0.1"))

N = int(sys.argv[1]); WARM = float(sys.argv[2]); WIN = float(sys.argv[3])
timing = CheckTiming(interval_s=1.0, timeout_s=1.0)
ADDR = os.environ.get("ADDR", "10.9.0.2")
keys = [ProbeKey(TcpCheck(), Target(ADDR, 20000 + i), timing) for i in range(N)]
ok = [0, 0]
def on_result(key, r):
    ok[r.ok] += 1
async def main():
    s = Scheduler(keys, on_result)
    t = asyncio.create_task(s.run())
    await asyncio.sleep(WARM)
    c0, t0, n0, o0 = time.process_time(), time.monotonic(), s.completed, os.times(); r0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(WIN)
    c1, t1, n1, o1 = time.process_time(), time.monotonic(), s.completed, os.times(); r1 = resource.getrusage(resource.RUSAGE_SELF)
    t.cancel()
    done = n1 - n0
    print(f"early={_sched.EARLY_S} N={N} checks/s={done/(t1-t0):.0f} cpu%={100*(c1-c0)/(t1-t0):.1f} us/check={1e6*(c1-c0)/done:.1f} ok={ok[1]} fail={ok[0]} user_us={1e6*(o1.user-o0.user)/done:.1f} sys_us={1e6*(o1.system-o0.system)/done:.1f} minflt/check={(r1.ru_minflt-r0.ru_minflt)/done:.2f} vcsw/check={(r1.ru_nvcsw-r0.ru_nvcsw)/done:.3f} ivcsw/check={(r1.ru_nivcsw-r0.ru_nivcsw)/done:.3f}")
asyncio.run(main())
