"""The kernel floor of a TCP check in this machine: N non-blocking connects, one epoll set, close."""
import os, select, socket, sys, time, resource
ADDR = os.environ.get("ADDR", "10.200.0.1")
N = int(sys.argv[1]); SECONDS = float(sys.argv[2])
S = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
ep = select.epoll()
done = 0
r0, o0, t0 = resource.getrusage(resource.RUSAGE_SELF), os.times(), time.monotonic()
while time.monotonic() - t0 < SECONDS:
    start = time.monotonic()
    socks = {}
    for p in range(20000, 20000 + N):
        s = socket.socket(socket.AF_INET, S)
        s.connect_ex((ADDR, p))
        ep.register(s.fileno(), select.EPOLLOUT)
        socks[s.fileno()] = s
    while socks:
        for fd, ev in ep.poll(1.0):
            s = socks.pop(fd)
            ep.unregister(fd)
            s.close()
            done += 1
    time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
r1, o1, t1 = resource.getrusage(resource.RUSAGE_SELF), os.times(), time.monotonic()
print(f"floor N={N} checks/s={done/(t1-t0):.0f} user_us={1e6*(o1.user-o0.user)/done:.1f} sys_us={1e6*(o1.system-o0.system)/done:.1f} minflt/check={(r1.ru_minflt-r0.ru_minflt)/done:.2f} vcsw/check={(r1.ru_nvcsw-r0.ru_nvcsw)/done:.3f} ivcsw/check={(r1.ru_nivcsw-r0.ru_nivcsw)/done:.3f}")
