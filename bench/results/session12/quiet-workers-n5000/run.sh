#!/bin/bash
# twelfth pass, quiet successes in probe workers: N = 5000, TCP, 20 kills: keepalived, healthd (raw, one process) and healthd as shipped
# ran as: tests/vm/run --timeout 2400 --mem 2G --rwdir /tmp/s12r -- /tmp/s12r/run.sh (commit a162729); results copied here
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd healthd-defaults --n 5000 --window 20 --kills 20 --json /tmp/s12r/vm-tcp.json >/tmp/s12r/out.log 2>&1
echo done
