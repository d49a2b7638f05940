#!/bin/sh
# healthd as shipped, TCP N = 5000 on one virtual server: probes.workers auto with one CPU left
# free (new: one worker at most on 2 CPUs) against the policy before (two workers), alternated
i=0
for t in new old new; do
  i=$((i+1))
  [ $t = new ] && cd /tmp/s17/wt2 || cd /tmp/s17/wt
  /usr/bin/python3 bench/vm_daemons.py --python /work/main/.venv/bin/python --checks tcp --daemons healthd-defaults --n 5000 --window 20 --kills 20 --json /tmp/s17/vm5/$i-$t.json
  mv /tmp/s17/vm5/healthd-defaults-tcp-5000.log /tmp/s17/vm5/$i-$t.log
done
