"""python -m healthd ..., with tracemalloc; at TMAT seconds write top stats to TMOUT."""
import os, sys, threading, time, tracemalloc, gc
from collections import Counter
out = os.environ["TMOUT"]; at = float(os.environ.get("TMAT", "60"))
tracemalloc.start(int(os.environ.get("TMFRAMES", "1")))
t0 = time.monotonic()
def sample():
    time.sleep(at)
    snap = tracemalloc.take_snapshot()
    rss = open("/proc/self/status").read().split("VmRSS:")[1].split("\n")[0].strip()
    with open(out, "w") as f:
        cur, peak = tracemalloc.get_traced_memory()
        f.write(f"rss={rss} traced={cur>>10}kB peak={peak>>10}kB\n")
        f.write("== by file\n")
        for s in snap.statistics("filename")[:40]:
            f.write(f"{s.size>>10:8d} kB {s.count:8d} {s.traceback[0].filename}\n")
        f.write("== by line\n")
        for s in snap.statistics("lineno")[:70]:
            fr = s.traceback[0]
            f.write(f"{s.size>>10:8d} kB {s.count:8d} {fr.filename}:{fr.lineno}\n")
        types = Counter(type(o).__name__ for o in gc.get_objects())
        f.write("== gc types\n" + ", ".join(f"{k}={v}" for k, v in types.most_common(40)) + "\n")
    print("TM DONE", file=sys.stderr, flush=True)
threading.Thread(target=sample, daemon=True).start()
sys.argv = ["healthd", *sys.argv[3:]]
import runpy
runpy.run_module("healthd", run_name="__main__", alter_sys=True)
