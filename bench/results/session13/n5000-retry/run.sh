#!/bin/bash
# thirteenth pass: N = 5000, TCP, 20 kills, after the retry heap (1015c71) and the incremental desired table (9c905bd)
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd healthd-defaults --n 5000 --window 20 --kills 20 --json /tmp/s13/r5/vm-tcp.json >/tmp/s13/r5/out.log 2>&1
echo done
