#!/bin/sh
cd /tmp/s19/wt
i=0
for py in mem plain plain; do
i=$((i+1))
/usr/bin/python3 bench/vm_daemons.py --python /tmp/s19/py-$py --checks tcp --daemons healthd-defaults --n 10000 --kills 0 --window 60 --startup-limit 300 --json /tmp/s19/vm3/rss-$i-$py.json > /tmp/s19/vm3/out-$i-$py.log 2>&1
cp /tmp/healthd-bench/healthd-defaults-tcp-10000.log /tmp/s19/vm3/log-$i-$py.log 2>/dev/null
done
