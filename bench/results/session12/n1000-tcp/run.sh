#!/bin/bash
# twelfth pass: N = 1000, TCP, 20 kills: keepalived, healthd (raw, one process) and healthd as shipped, after the reconcile pass went into steps and quiet successes into the workers
# ran as: tests/vm/run --timeout 2400 --mem 2G --rwdir /tmp/s12r2 -- /tmp/s12r2/run.sh (commit HEAD); results copied here
cd /work/main
git log --oneline -1 > /tmp/s12r2/commit.txt 2>/dev/null
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s12r2/vm-tcp.json >/tmp/s12r2/out.log 2>&1
echo done
