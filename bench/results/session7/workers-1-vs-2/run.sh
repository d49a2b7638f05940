#!/bin/bash
# session 7: 3ea8831, TCP, N = 1000, raw adapter: probes in 1 worker vs 2 workers (alternated), keepalived
cd /tmp/wt-new || exit 1
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd:1 healthd:2 healthd:1 healthd:2 --n 1000 --window 20 --kills 20 --json /tmp/s7e/vm-tcp.json >/tmp/s7e/tcp.log 2>&1
