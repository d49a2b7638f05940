#!/bin/sh
# healthd as shipped (two workers on 2 vCPUs), the workers at nice 10: TCP N = 5000 on one VS
i=0
for t in nice nice; do
  i=$((i+1))
  cd /tmp/s17/wt3
  /usr/bin/python3 bench/vm_daemons.py --python /work/main/.venv/bin/python --checks tcp --daemons healthd-defaults --n 5000 --window 20 --kills 20 --json /tmp/s17/vm6/$i-$t.json
  mv /tmp/s17/vm6/healthd-defaults-tcp-5000.log /tmp/s17/vm6/$i-$t.log
done
