#!/bin/sh
i=0
for v in wt18 wth wt18 wth; do
i=$((i+1))
cd /tmp/s19/$v && PYTHONPATH=/tmp/s19/$v /work/main/.venv/bin/python bench/vm_netlink.py --n 10000 --repeat 1 --json /tmp/s19/vm9/netlink-$i-$v.json > /tmp/s19/vm9/out-$i-$v.log 2>&1
done
