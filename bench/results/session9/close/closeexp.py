"""Kernel cost of a TCP check by how it closes, paced like a scheduler (RATE connects/s spread
over 10 ms ticks) against tcp-sink on a local dummy address, in the current network namespace.

    closeexp.py VARIANT RATE SECONDS SINK_PID
VARIANT: fin-now (close at once when the handshake is over: healthd today), rst-now (SO_LINGER
0 then close: RST, no TIME_WAIT), fin-epoll (wait for EPOLLOUT in an epoll set, then close:
keepalived's order), fin-peer (wait until the peer closed first, then close).
"""
import os, select, socket, struct, sys, time, resource
ADDR = os.environ.get("ADDR", "10.200.0.1")
VARIANT, RATE, SECONDS, SINK = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
N = int(os.environ.get("NPORTS", "1000"))
S = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
LINGER0 = struct.pack("ii", 1, 0)
ep = select.epoll()
socks: dict[int, socket.socket] = {}
WAIT = {"fin-epoll": select.EPOLLOUT, "fin-peer": select.EPOLLIN | select.EPOLLRDHUP}.get(VARIANT)

def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

def sockstat():
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            return line.strip()

def one(port):
    s = socket.socket(socket.AF_INET, S)
    s.connect_ex((ADDR, port))
    for _ in range(CLK):
        CLOCK()
    if GSO:
        s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
        s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if WAIT is None:
        if VARIANT == "rst-now":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        s.close()
        if TOUCH:
            touch()
        if SPIN and not DEFER:
            spin()
        return 1
    ep.register(s.fileno(), WAIT)
    socks[s.fileno()] = s
    return 0

def drain(timeout):
    n = 0
    for fd, _ in ep.poll(timeout):
        s = socks.pop(fd)
        ep.unregister(fd)
        s.close()
        n += 1
    return n

TICK = float(os.environ.get("TICK", "0.01"))
CLK = int(os.environ.get("CLK", "0"))
CLOCK = {"mono": time.monotonic, "real": time.time, "coarse": lambda: time.clock_gettime(time.CLOCK_MONOTONIC_COARSE)}[os.environ.get("CLOCKKIND", "mono")]
GSO = os.environ.get("GSO") == "1"
SPIN = float(os.environ.get("SPIN_US", "0")) / 1e6
DEFER = os.environ.get("DEFER") == "1"
def spin():
    # user-space work after a check (a daemon's result handling), a busy loop on the clock-free
    # perf counter substitute: count iterations calibrated once
    for _ in range(SPIN_ITERS):
        pass
SPIN_ITERS = 0
TOUCH = int(os.environ.get("TOUCH", "0"))  # objects of a 200 000-object heap touched per check
if TOUCH:
    import random
    HEAP = [[i, str(i), {"k": i}] for i in range(200000)]
    PICK = [random.randrange(200000) for _ in range(1 << 16)]
    pick_at = 0
def touch():
    global pick_at
    for _ in range(TOUCH):
        o = HEAP[PICK[pick_at & 0xFFFF]]
        o[0] += 1
        o[2]["k"] = o[0]
        pick_at += 1
if SPIN:
    t = time.process_time(); n = 0
    while time.process_time() - t < 0.5:
        for _ in range(1000):
            pass
        n += 1000
    SPIN_ITERS = int(n / (time.process_time() - t) * SPIN)
per_tick = max(1, round(RATE * TICK))
port = 20000
done = 0
# warm-up 3 s, then measure
for phase in ("warm", "measure"):
    if phase == "measure":
        r0, o0, t0, k0 = resource.getrusage(resource.RUSAGE_SELF), os.times(), time.monotonic(), ticks(SINK)
        done = 0
    end = time.monotonic() + (3.0 if phase == "warm" else SECONDS)
    nxt = time.monotonic()
    while time.monotonic() < end:
        for _ in range(per_tick):
            done += one(port)
            port = 20000 + (port - 20000 + 1) % N
        if SPIN and DEFER:
            for _ in range(per_tick):
                spin()
        nxt += TICK
        while True:
            left = nxt - time.monotonic()
            if left <= 0:
                break
            done += drain(left) if socks else 0
            if not socks:
                time.sleep(max(0.0, nxt - time.monotonic()))
r1, o1, t1, k1 = resource.getrusage(resource.RUSAGE_SELF), os.times(), time.monotonic(), ticks(SINK)
hz = os.sysconf("SC_CLK_TCK")
print(f"{VARIANT:9s} clk={CLK}x{os.environ.get('CLOCKKIND','mono')} gso={GSO} spin={SPIN*1e6:.0f}us defer={DEFER} touch={TOUCH} tick={TICK} rate={RATE} checks/s={done/(t1-t0):.0f} user_us={1e6*(o1.user-o0.user)/done:.1f} "
      f"sys_us={1e6*(o1.system-o0.system)/done:.1f} sink_us={1e6*(k1-k0)/hz/done:.1f} "
      f"vcsw/check={(r1.ru_nvcsw-r0.ru_nvcsw)/done:.3f} | {sockstat()}", flush=True)
