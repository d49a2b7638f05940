#!/bin/bash
# session 10: N = 5000, TCP, with kills: keepalived and healthd as shipped (all defaults), the harness waiting for the move to workers (fixed in 02176a7)
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd-defaults --n 5000 --window 20 --kills 20 --json /tmp/s10d/vm-tcp.json >/tmp/s10d/out.log 2>&1
echo done
