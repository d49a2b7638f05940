#!/bin/bash
# fourteenth pass: TCP N = 5000, healthd as shipped with close: graceful (the old behaviour) and reset, keepalived for the boot's baseline
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd-defaults --tcp-close graceful --n 5000 --window 20 --kills 20 --json /tmp/s14/v1/graceful.json >/tmp/s14/v1/out-graceful.log 2>&1
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --tcp-close reset --n 5000 --window 20 --kills 20 --json /tmp/s14/v1/reset.json >/tmp/s14/v1/out-reset.log 2>&1
echo done
