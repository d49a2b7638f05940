#!/bin/bash
# fourteenth pass, 0a002e1: HTTP checks in the C engine; keepalived and healthd as shipped, N = 1000 and 5000, one boot
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks http --daemons keepalived healthd-defaults --n 1000 5000 --window 20 --kills 20 --json /tmp/s14/v3/vm-http.json >/tmp/s14/v3/out.log 2>&1
echo done
