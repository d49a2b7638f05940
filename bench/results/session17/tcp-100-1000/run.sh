#!/bin/sh
cd /tmp/s17/wt
/usr/bin/python3 bench/vm_daemons.py --python /work/main/.venv/bin/python --checks tcp --daemons keepalived healthd healthd-defaults --n 100 1000 --window 20 --kills 20 --json /tmp/s17/vm4/tcp-100-1000.json
