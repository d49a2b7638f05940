#!/bin/bash
# thirteenth pass: N = 5000, TCP, 20 kills, with the retry heap, the incremental desired table and the dump objects kept (ad1d95f)
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd healthd-defaults --n 5000 --window 20 --kills 20 --json /tmp/s13/r7/vm-tcp.json >/tmp/s13/r7/out.log 2>&1
echo done
