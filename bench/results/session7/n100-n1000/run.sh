#!/bin/bash
# session 7: 7827f95, TCP, N = 100 and 1000: keepalived, all defaults, raw in one process
cd /tmp/wt-new || exit 1
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd-defaults healthd --n 100 1000 --window 20 --kills 20 --json /tmp/s7c/vm-tcp.json >/tmp/s7c/tcp.log 2>&1
