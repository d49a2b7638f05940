import subprocess, collections, sys
def load(name, skip, tail=2.0):
    out = subprocess.run(["perf","script","-i",f"{name}.data","--kallsyms","kallsyms","-F","time,ip,sym,dso"],capture_output=True,text=True).stdout
    rows=[]
    for line in out.splitlines():
        line=line.strip()
        if not line: continue
        t, rest = line.split(":",1)
        rest=rest.strip()
        # "addr sym (dso)" or "sym (dso)"
        dso = rest[rest.rfind("(")+1:-1] if rest.endswith(")") else "?"
        sym = rest[:rest.rfind("(")].strip() if "(" in rest else rest
        parts = sym.split(None,1)
        sym = parts[1] if len(parts)>1 else parts[0] if parts else "?"
        rows.append((float(t), sym, dso))
    t0, t1 = rows[0][0]+skip, rows[-1][0]-tail
    sel=[r for r in rows if t0<=r[0]<=t1]
    return sel, t1-t0
res={}
for name, skip in (("sched", 16.0), ("loop", 6.0)):
    sel, secs = load(name, skip)
    c=collections.Counter(s for _,s,_ in sel)
    d=collections.Counter("kernel" if "kernel" in dso else ("python" if "python" in dso else dso) for _,_,dso in sel)
    res[name]=(c,secs,d)
    print(name, f"{secs:.1f}s", {k: f"{v/secs/2000*1e6/600:.0f}us/check" for k,v in d.most_common(6)})
c1,s1,_=res["sched"]; c2,s2,_=res["loop"]
def per(c,s,k): return c[k]/s/2000*1e6/600  # us per check at 600/s
keys=set(c1)|set(c2)
rows=sorted(keys, key=lambda k: -(per(c1,s1,k)-per(c2,s2,k)))
print("symbol: sched us/check, loop us/check, diff")
for k in rows[:40]:
    print(f"{k[:50]:50s} {per(c1,s1,k):7.1f} {per(c2,s2,k):7.1f} {per(c1,s1,k)-per(c2,s2,k):+7.1f}")
