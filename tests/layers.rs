//! The library's modules form layers: no import cycle between the top-level
//! modules of `src/`, nor between the submodules of `backend::pkcs11`.
//!
//! The graph is built from the source text: every `crate::…`, `super::…`
//! and `self::…` path outside `#[cfg(test)]` items, resolved through the
//! `use` re-exports of the module it names (so `crate::Error` counts as an
//! edge to `error`). The binary's own files (`main.rs`, `logger.rs`,
//! `cli/`) are not part of the library and are left out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test (or example) that cannot go on fails on the spot, an index out of range included"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A module's path below the crate root (`["backend", "pkcs11", "mark"]`).
type ModPath = Vec<String>;

/// One parsed source file.
struct File {
    rel: PathBuf,
    module: ModPath,
    /// Module paths this file names, with the 1-based line of the mention.
    paths: Vec<(ModPath, usize)>,
    /// `use` items: the name each binds and the path it names.
    uses: Vec<(String, ModPath)>,
    /// Child modules declared under `#[cfg(test)]`.
    test_children: Vec<String>,
}

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

/// The text with comments, string and character literals blanked out
/// (newlines kept, so line numbers still hold).
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(c[i - 1]))
        {
            let Some(j) = raw_string_end(&c, i) else {
                out.push(c[i]);
                i += 1;
                continue;
            };
            for &ch in &c[i..j] {
                out.push(blank(ch));
            }
            i = j;
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' {
            // A character literal, or a lifetime (left as it is).
            if next == Some('\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                for _ in i..=j.min(c.len() - 1) {
                    out.push(' ');
                }
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c[i]);
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Where the raw string r"…" or r#"…"# starting at `c[i]` ends (one past
/// its last character); None when `c[i]` starts no raw string.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// A tiny tokenizer over the stripped text: identifiers, `::` and single
/// punctuation characters, each with its line.
fn tokens(text: &str) -> Vec<(String, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident(ch) {
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            out.push((c[start..i].iter().collect(), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(("::".to_owned(), line));
            i += 2;
        } else {
            out.push((ch.to_string(), line));
            i += 1;
        }
    }
    out
}

/// Removes `#[cfg(test)]` items from the token stream; returns the names
/// of the out-of-line test modules they declare (`mod tests;`).
fn drop_test_items(toks: &mut Vec<(String, usize)>) -> Vec<String> {
    let mut children = Vec::new();
    let mut kept = Vec::with_capacity(toks.len());
    let mut i = 0;
    let t = |k: usize| toks.get(k).map_or("", |x| x.0.as_str());
    while i < toks.len() {
        let is_cfg_test = t(i) == "#"
            && t(i + 1) == "["
            && t(i + 2) == "cfg"
            && t(i + 3) == "("
            && t(i + 4) == "test"
            && t(i + 5) == ")"
            && t(i + 6) == "]";
        if !is_cfg_test {
            kept.push(toks[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        // Further attributes.
        while t(i) == "#" && t(i + 1) == "[" {
            let mut depth = 0;
            loop {
                match t(i) {
                    "[" => depth += 1,
                    "]" => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    "" => break,
                    _ => {}
                }
                i += 1;
            }
        }
        // The item: up to a `;` at depth 0 or the end of its first block.
        let mut depth = 0;
        let start = i;
        while i < toks.len() {
            match t(i) {
                "{" => depth += 1,
                "}" => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                ";" if depth == 0 => {
                    if t(start) == "mod" {
                        children.push(t(start + 1).to_owned());
                    } else if t(start) == "pub" && t(start + 1) == "mod" {
                        children.push(t(start + 2).to_owned());
                    }
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    *toks = kept;
    children
}

/// Parses the path tree at `toks[i..]` (after a `crate::`-like root):
/// `a::b`, `a::{b, c::d}`, `{a, b}`. Pushes every full path.
fn path_tree(
    toks: &[(String, usize)],
    i: &mut usize,
    prefix: &ModPath,
    out: &mut Vec<(ModPath, Option<String>)>,
) {
    let t = |k: usize| toks.get(k).map_or("", |x| x.0.as_str());
    let mut path = prefix.clone();
    loop {
        if t(*i) == "{" {
            *i += 1;
            while t(*i) != "}" && *i < toks.len() {
                path_tree(toks, i, &path, out);
                if t(*i) == "," {
                    *i += 1;
                }
            }
            *i += 1;
            return;
        }
        let name = t(*i);
        if name.is_empty() || !name.chars().all(is_ident) {
            out.push((path, None));
            return;
        }
        *i += 1;
        if name != "self" {
            path.push(name.to_owned());
        }
        if t(*i) == "::" {
            *i += 1;
            continue;
        }
        let binding = if t(*i) == "as" {
            *i += 1;
            let alias = t(*i).to_owned();
            *i += 1;
            alias
        } else if name == "self" {
            path.last().cloned().unwrap_or_default()
        } else {
            name.to_owned()
        };
        out.push((path, Some(binding)));
        return;
    }
}

fn parse(root: &Path, file: &Path) -> File {
    let rel = file.strip_prefix(root).unwrap().to_path_buf();
    let module = module_of(&rel);
    let text = strip(&std::fs::read_to_string(file).unwrap());
    let mut toks = tokens(&text);
    let test_children = drop_test_items(&mut toks);
    let t = |k: usize| toks.get(k).map_or("", |x| x.0.as_str());
    let mut paths = Vec::new();
    let mut uses = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let word = t(i);
        let starts_path = matches!(word, "crate" | "super" | "self")
            && t(i + 1) == "::"
            && !(i > 0 && matches!(t(i - 1), "$" | "::" | "in"));
        let in_use = i > 0 && t(i - 1) == "use";
        let line = toks[i].1;
        if !(starts_path || (in_use && word.chars().all(is_ident) && t(i + 1) == "::")) {
            i += 1;
            continue;
        }
        let mut base: ModPath = match word {
            "crate" => Vec::new(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            "self" => module.clone(),
            // `use child::…` in a parent file, or an external crate.
            _ => {
                let mut m = module.clone();
                m.push(word.to_owned());
                m
            }
        };
        i += 2;
        while t(i) == "super" && t(i + 1) == "::" {
            base.pop();
            i += 2;
        }
        let mut found = Vec::new();
        path_tree(&toks, &mut i, &base, &mut found);
        for (path, binding) in found {
            if let (true, Some(name)) = (in_use, binding) {
                uses.push((name, path.clone()));
            }
            paths.push((path, line));
        }
    }
    File {
        rel,
        module,
        paths,
        uses,
        test_children,
    }
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
                !matches!(first.as_ref(), "main.rs" | "logger.rs" | "cli" | "cli.rs")
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
