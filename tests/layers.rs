//! The library's modules form layers: no import cycle between the top-level
//! modules of `src/`, nor between the submodules of `backend::pkcs11`.
//!
//! The graph is built from the source text: every `crate::…`, `super::…`
//! and `self::…` path outside `#[cfg(test)]` items, resolved through the
//! `use` re-exports of the module it names (so `crate::Error` counts as an
//! edge to `error`). The command line (`cli`) is a module like the others;
//! only `main.rs`, the binary's one call into it, is left out. Reading a
//! file is in `layers/source.rs`.

#![allow(unreachable_pub, reason = "a test or example crate has no public API")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test (or example) that cannot go on fails on the spot, an index out of range included"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "layers/source.rs"]
mod source;

use source::{File, parse};

/// A module's path below the crate root (`["backend", "pkcs11", "mark"]`).
type ModPath = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "lib" && stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

struct Crate {
    files: Vec<File>,
    modules: BTreeSet<ModPath>,
    /// Per module: the names its `use` items bind, and what they name.
    uses: BTreeMap<ModPath, BTreeMap<String, ModPath>>,
}

impl Crate {
    fn load() -> Crate {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        rust_files(&root, &mut all);
        let mut files: Vec<File> = all
            .iter()
            .map(|f| parse(&root, f))
            .filter(|f| {
                let first = f.rel.iter().next().unwrap().to_string_lossy();
                first != "main.rs"
            })
            .collect();
        let tests: Vec<ModPath> = files
            .iter()
            .flat_map(|f| {
                f.test_children.iter().map(|c| {
                    let mut m = f.module.clone();
                    m.push(c.clone());
                    m
                })
            })
            .collect();
        files.retain(|f| !tests.iter().any(|t| f.module.starts_with(t)));
        let modules = files.iter().map(|f| f.module.clone()).collect();
        let mut uses: BTreeMap<ModPath, BTreeMap<String, ModPath>> = BTreeMap::new();
        for f in &files {
            let map = uses.entry(f.module.clone()).or_default();
            for (name, path) in &f.uses {
                map.insert(name.clone(), path.clone());
            }
        }
        Crate {
            files,
            modules,
            uses,
        }
    }

    /// The module a path ends up in, following `use` items; `None` for a
    /// path that leaves the crate.
    fn resolve(&self, path: &[String], hops: usize) -> Option<ModPath> {
        let mut module: ModPath = Vec::new();
        for (k, seg) in path.iter().enumerate() {
            let mut next = module.clone();
            next.push(seg.clone());
            if self.modules.contains(&next) {
                module = next;
                continue;
            }
            let via = self.uses.get(&module).and_then(|m| m.get(seg));
            return match via {
                Some(target) if hops < 8 && target.as_slice() != &path[..=k] => {
                    let mut full = target.clone();
                    full.extend_from_slice(&path[k + 1..]);
                    self.resolve(&full, hops + 1)
                }
                _ => Some(module),
            };
        }
        Some(module)
    }

    /// Edges between the children of `parent`: from the child a file lives
    /// in to the child a path names, with the first place it is named.
    fn edges(&self, parent: &[String]) -> BTreeMap<(String, String), String> {
        let depth = parent.len();
        let mut edges = BTreeMap::new();
        for f in &self.files {
            if f.module.len() <= depth || !f.module.starts_with(parent) {
                continue;
            }
            let from = &f.module[depth];
            for (path, line) in &f.paths {
                let Some(to) = self.resolve(path, 0) else {
                    continue;
                };
                if to.len() <= depth || !to.starts_with(parent) || &to[depth] == from {
                    continue;
                }
                edges
                    .entry((from.clone(), to[depth].clone()))
                    .or_insert_with(|| format!("{}:{line}", f.rel.display()));
            }
        }
        edges
    }
}

/// The strongly connected components with more than one member (Tarjan).
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let mut succ: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        succ.entry(a).or_default().push(b);
        succ.entry(b).or_default();
    }
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a str, succ: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for &w in &succ[v] {
            if !s.index.contains_key(w) {
                visit(w, succ, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in succ.keys() {
        if !s.index.contains_key(v) {
            visit(v, &succ, &mut s);
        }
    }
    s.out
}

/// The cycles among `parent`'s children, each with the edges inside it
/// and where each edge is first taken; empty when there is none.
fn report(parent: &[String]) -> String {
    let krate = Crate::load();
    let edges = krate.edges(parent);
    let mut text = String::new();
    for scc in cycles(&edges) {
        let members: BTreeSet<&String> = scc.iter().collect();
        writeln!(text, "cycle among {}:", scc.join(", ")).unwrap();
        for ((a, b), at) in &edges {
            if members.contains(a) && members.contains(b) {
                writeln!(text, "  {a} -> {b}   ({at})").unwrap();
            }
        }
    }
    text
}

#[test]
fn no_cycle_between_top_level_modules() {
    let cycles = report(&[]);
    assert!(cycles.is_empty(), "import cycles in src/:\n{cycles}");
}

#[test]
fn no_cycle_inside_the_pkcs11_backend() {
    let cycles = report(&["backend".to_owned(), "pkcs11".to_owned()]);
    assert!(
        cycles.is_empty(),
        "import cycles in src/backend/pkcs11/:\n{cycles}"
    );
}

#[test]
fn the_graph_sees_known_edges() {
    // The parser finds the edges it is meant to: a `use crate::…` group,
    // a re-export through lib.rs, a `super::` path.
    let krate = Crate::load();
    let top = krate.edges(&[]);
    assert!(top.contains_key(&("issue".into(), "csr".into())), "{top:?}");
    assert!(top.contains_key(&("csr".into(), "error".into())), "{top:?}");
    let p11 = krate.edges(&["backend".to_owned(), "pkcs11".to_owned()]);
    assert!(
        p11.contains_key(&("pool".into(), "keygen".into())),
        "{p11:?}"
    );
}
