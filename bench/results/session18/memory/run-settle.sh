#!/bin/sh
cd /tmp/s18/wt
/usr/bin/python3 bench/vm_daemons.py --python /work/main/.venv/bin/python --checks tcp --daemons healthd-defaults --n 10000 --kills 0 --window 60 --startup-limit 300 --json /tmp/s18/vm6/rss10000.json
