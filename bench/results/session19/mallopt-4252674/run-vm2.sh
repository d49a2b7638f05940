#!/bin/sh
for v in wt wtb wt; do
cd /tmp/s19/$v
i=$((i+1))
/usr/bin/python3 bench/vm_daemons.py --python /tmp/s19/py-plain --checks tcp --daemons healthd-defaults --n 10000 --kills 0 --window 60 --startup-limit 300 --json /tmp/s19/vm2/rss-$i-$v.json > /tmp/s19/vm2/out-$i-$v.log 2>&1
cp /tmp/healthd-bench/healthd-defaults-tcp-10000.log /tmp/s19/vm2/log-$i-$v.log 2>/dev/null
done
