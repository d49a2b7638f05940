#!/bin/bash
# eleventh pass (session 11 of the issue): N = 1000, TCP, 20 kills: keepalived, healthd (raw, one process) and healthd as shipped, with the harness measuring again when the probes move during the window
# ran as: tests/vm/run --timeout 1800 --mem 2G --rwdir /tmp/s12n -- /tmp/s12n/run.sh; results copied here
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s12n/vm-tcp.json >/tmp/s12n/out.log 2>&1
echo done
