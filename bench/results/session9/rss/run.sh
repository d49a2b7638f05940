#!/bin/bash
# On the host: peak RSS at 10 000 real servers, raw in one process and all defaults (60 s window).
mkdir -p /tmp/s9rss
tests/vm/run --timeout 2400 --mem 2G --rwdir /tmp/s9rss -- /work/main/.venv/bin/python bench/vm_daemons.py \
    --checks tcp --n 10000 --kills 0 --daemons healthd healthd-defaults --window 60 --startup-limit 300 \
    --json /tmp/s9rss/vm-rss.json > /tmp/s9rss/out.log 2>&1
