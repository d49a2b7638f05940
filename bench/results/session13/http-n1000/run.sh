#!/bin/bash
# thirteenth pass: HTTP, N = 1000, 20 kills, keepalived and healthd (one process; as shipped), the code of ad1d95f (retry heap, cheaper passes)
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks http --daemons keepalived healthd healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s13/r8/vm-http.json >/tmp/s13/r8/out.log 2>&1
echo done
