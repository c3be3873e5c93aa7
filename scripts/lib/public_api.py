"""The public items of hsm_csr, from rustdoc's JSON (see scripts/public-api.sh).

usage: public_api.py DOC_JSON [all]

Walks from the crate root through every public item, following public
modules and `pub use` re-exports (an item is counted where it is exported,
so a re-export counts once more). Prints "items N modules M {kind: count}",
M counting the crate root; with `all`, each item and its kind after it.
"""

import collections
import json
import sys


def kind_of(item):
    return next(iter(item["inner"]))


def public_items(doc):
    index = doc["index"]
    seen, items = set(), []

    def walk(module_id, path):
        for child_id in index[str(module_id)]["inner"]["module"]["items"]:
            child = index.get(str(child_id))
            if child is None or child.get("visibility") != "public":
                continue
            kind = kind_of(child)
            if kind == "use":
                name, target_id = child["inner"]["use"]["name"], child["inner"]["use"].get("id")
                target = index.get(str(target_id)) if target_id is not None else None
                if target is None:
                    items.append((f"{path}::{name}", "use-extern"))
                    continue
                kind, child_id = kind_of(target), target_id
            else:
                name = child["name"]
            items.append((f"{path}::{name}", kind))
            if kind == "module" and child_id not in seen:
                seen.add(child_id)
                walk(child_id, f"{path}::{name}")

    walk(doc["root"], "hsm_csr")
    return items


def main():
    with open(sys.argv[1]) as f:
        items = public_items(json.load(f))
    kinds = collections.Counter(kind for _, kind in items)
    print("items", len(items), "modules", kinds["module"] + 1, dict(kinds))
    if sys.argv[2:] == ["all"]:
        for path, kind in sorted(items):
            print(kind, path)


main()
