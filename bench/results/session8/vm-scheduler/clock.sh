cat /sys/devices/system/clocksource/clocksource0/current_clocksource /sys/devices/system/clocksource/clocksource0/available_clocksource
dmesg | grep -i -E "clocksource|tsc" | head -20
/work/main/.venv/bin/python - <<'PY'
import os, time, socket
def cost(f, n):
    o0 = os.times(); t0 = time.perf_counter()
    for _ in range(n): f()
    o1 = os.times()
    return f"user {1e6*(o1.user-o0.user)/n:.2f} us sys {1e6*(o1.system-o0.system)/n:.2f} us"
print("monotonic", cost(time.monotonic, 200000))
print("process_time", cost(time.process_time, 50000))
print("getpid", cost(os.getpid, 200000))
s = socket.socket()
print("getsockopt SO_ERROR", cost(lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), 100000))
PY
