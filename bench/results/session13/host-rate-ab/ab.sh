#!/bin/bash
# A/B at 20 000 checks/s: old (9c905bd, the reconcile pass mapping the dump onto its own copies) vs new (HEAD)
for i in 1 2 3; do
  for v in old new; do
    if [ $v = old ]; then
      (cd /tmp/s13/old && PYTHONPATH=/tmp/s13/old /work/main/.venv/bin/python bench/host_rate.py --check tcp --workers 0 --interval 0.5 --n 10000 --window 15 --json /tmp/s13/ab-$v-$i.json >/dev/null 2>&1)
    else
      (cd /work/main && .venv/bin/python bench/host_rate.py --check tcp --workers 0 --interval 0.5 --n 10000 --window 15 --json /tmp/s13/ab-$v-$i.json >/dev/null 2>&1)
    fi
    python3 -c "
import json,sys;d=json.load(open('/tmp/s13/ab-$v-$i.json'));r=d['runs'][0]
b=r['delays_by_bucket_ms'];t=sum(b.values());over=sum(v for k,v in b.items() if float(k)>10)
print('$v $i', round(r['checks_per_s']), 'cpu', round(r['cpu_pct'],1), 'us/check', round(r.get('us_per_check',0),1), 'over10ms %.2f%%' % (100*over/t))"
  done
done
