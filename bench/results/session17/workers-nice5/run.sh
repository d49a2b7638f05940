#!/bin/sh
# healthd as shipped (two workers on 2 vCPUs), the workers at nice 5 (a worktree: os.nice(5) at
# the start of probeworker.main): TCP N = 5000 on one VS twice, then in 50 x 100 once
cd /tmp/s17/wt3
for i in 1 2; do
  /usr/bin/python3 bench/vm_daemons.py --python /work/main/.venv/bin/python --checks tcp --daemons healthd-defaults --n 5000 --window 20 --kills 20 --json /tmp/s17/vm8/$i-onevs-nice5.json
  mv /tmp/s17/vm8/healthd-defaults-tcp-5000.log /tmp/s17/vm8/$i-onevs-nice5.log
done
/usr/bin/python3 bench/vm_daemons.py --python /work/main/.venv/bin/python --checks tcp --daemons healthd-defaults --n 5000 --window 20 --kills 20 --real-servers-per-virtual-server 100 --json /tmp/s17/vm8/3-split-nice5.json
mv /tmp/s17/vm8/healthd-defaults-tcp-5000.log /tmp/s17/vm8/3-split-nice5.log
