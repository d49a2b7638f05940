#!/bin/sh
cd /tmp/s19/wt
for v in plain mmap; do
/usr/bin/python3 bench/vm_daemons.py --python /tmp/s19/py-$v --checks tcp --daemons healthd-defaults --n 10000 --kills 0 --window 60 --startup-limit 300 --json /tmp/s19/vm1/rss-$v.json > /tmp/s19/vm1/out-$v.log 2>&1
cp /tmp/healthd-bench/healthd-defaults-tcp-10000.log /tmp/s19/vm1/log-$v.log 2>/dev/null
done
