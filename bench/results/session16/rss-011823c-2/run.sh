#!/bin/sh
cd /work/main && /usr/bin/python3 bench/vm_daemons.py --checks tcp --n 10000 --kills 0 --daemons healthd --window 60 --startup-limit 300 --json /tmp/s16/rss3/vm-rss.json
