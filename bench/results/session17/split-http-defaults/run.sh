#!/bin/sh
cd /tmp/s17/wt
for i in 1 2; do
/usr/bin/python3 bench/vm_daemons.py --python /work/main/.venv/bin/python --checks http --daemons healthd-defaults --n 5000 --window 20 --kills 20 --real-servers-per-virtual-server 100 --json /tmp/s17/vm1/defaults-http-$i.json
done
