"""python -m healthd ..., logging memory composition at fixed times (to MEMOUT)."""
import ctypes, gc, io, os, sys, threading, time, contextlib
from collections import Counter
out = os.environ.get("MEMOUT", "/tmp/s18/vm5/mem.txt")
t0 = time.monotonic()

class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MI2

def arenas() -> str:
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2); os.close(w); os.close(saved)
    text = os.read(r, 1 << 20).decode(errors="replace"); os.close(r)
    keep = [l for l in text.splitlines() if "arenas" in l or "Total" in l or "# bytes in allocated blocks" in l or "free pools" in l or "unused pools" in l]
    return " | ".join(" ".join(l.split()) for l in keep[:8])

def sample() -> None:
    for at in (20, 35, 50, 60, 70, 80, 95, 115, 140, 170):
        time.sleep(max(0, at - (time.monotonic() - t0)))
        rss = open("/proc/self/status").read().split("VmRSS:")[1].split("\n")[0].strip()
        m = libc.mallinfo2()
        types = Counter(type(o).__name__ for o in gc.get_objects())
        with open(out, "a") as f:
            f.write(f"t={at} rss={rss} blocks={sys.getallocatedblocks()} malloc_arena={m.arena>>10}kB inuse={m.uordblks>>10}kB free={m.fordblks>>10}kB mmap={m.hblkhd>>10}kB threads={threading.active_count()}\n")
            f.write("  pymalloc: " + arenas() + "\n")
            f.write("  types: " + ", ".join(f"{k}={v}" for k, v in types.most_common(14)) + "\n")

threading.Thread(target=sample, daemon=True).start()
args = sys.argv[1:]
assert args[:2] == ["-m", "healthd"], args
sys.argv = ["healthd", *args[2:]]
import runpy
runpy.run_module("healthd", run_name="__main__", alter_sys=True)
