# The public items of hsm_csr, from rustdoc JSON (see scripts/public-api.sh).
import json,sys,collections
d=json.load(open(sys.argv[1]))
idx=d["index"]; paths=d["paths"]
# reachable public items: walk from root module through public items (pub use included)
root=d["root"]
seen=set(); items=[]
def vis_pub(it): return it.get("visibility")=="public"
def walk(mid, prefix):
    it=idx[str(mid)] if str(mid) in idx else None
    if it is None: return
    inner=it["inner"]
    if "module" in inner:
        for c in inner["module"]["items"]:
            ci=idx.get(str(c))
            if ci is None or not vis_pub(ci): continue
            kind=list(ci["inner"].keys())[0]
            if kind=="use":
                u=ci["inner"]["use"]
                name=u["name"]; tgt=u.get("id")
                if tgt is None or str(tgt) not in idx: 
                    items.append((prefix+"::"+name,"use-extern")); continue
                t=idx[str(tgt)]; tk=list(t["inner"].keys())[0]
                items.append((prefix+"::"+name,tk))
                if tk=="module" and tgt not in seen:
                    seen.add(tgt); walk(tgt,prefix+"::"+name)
                continue
            name=ci.get("name")
            items.append((prefix+"::"+str(name),kind))
            if kind=="module" and c not in seen:
                seen.add(c); walk(c,prefix+"::"+name)
walk(root,"hsm_csr")
kinds=collections.Counter(k for _,k in items)
mods=[p for p,k in items if k=="module"]
print("items",len(items),"modules",len(mods)+1, dict(kinds))
if len(sys.argv)>2:
    for p,k in sorted(items): print(k,p)
