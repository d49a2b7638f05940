#!/bin/sh
cd /tmp/s18/wt
export MEMOUT=/tmp/s18/vm5/mem.txt
/usr/bin/python3 bench/vm_daemons.py --python /tmp/s18/pywrap2 --checks tcp --daemons healthd-defaults --n 10000 --kills 0 --window 60 --startup-limit 300 --json /tmp/s18/vm5/rss10000-mem.json
