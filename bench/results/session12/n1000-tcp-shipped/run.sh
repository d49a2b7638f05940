#!/bin/bash
# twelfth pass: N = 1000, TCP, 20 kills: keepalived and healthd as shipped again (the run before had host load during its as-shipped step)
# ran as: tests/vm/run --timeout 2400 --mem 2G --rwdir /tmp/s12r3 -- /tmp/s12r3/run.sh (commit HEAD); results copied here
cd /work/main
git log --oneline -1 > /tmp/s12r3/commit.txt 2>/dev/null
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s12r3/vm-tcp.json >/tmp/s12r3/out.log 2>&1
echo done
