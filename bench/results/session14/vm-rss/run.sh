#!/bin/bash
# fourteenth pass: peak RSS at N = 10000 (the /metrics text written in C, nothing kept between scrapes), as bench/run-all's RSS step
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --n 10000 --kills 0 --daemons healthd healthd-defaults --window 60 --startup-limit 300 --json /tmp/s14/v2/vm-rss.json >/tmp/s14/v2/out.log 2>&1
echo done
