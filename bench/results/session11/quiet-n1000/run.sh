#!/bin/bash
# eleventh pass, quiet successes: N = 1000, TCP, 20 kills: keepalived, healthd (raw, one process) and healthd as shipped
# ran as: tests/vm/run --timeout 1800 --mem 2G --rwdir /tmp/s12q -- /tmp/s12q/run.sh (commit 86d833d); results copied here
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s12q/vm-tcp.json >/tmp/s12q/out.log 2>&1
echo done
