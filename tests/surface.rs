//! The public API is what `docs/library.md` says it is: its table "The
//! public API" lists every public module and every item each one exports,
//! and this test reads the `pub` declarations in `src/` (from `lib.rs`,
//! through each `pub mod`) and compares the two. With `unreachable_pub` on,
//! everything else says `pub(crate)`, so a new `pub` item is either listed
//! there or fails here. Needs no token.

#![allow(unreachable_pub, reason = "a test crate has no public API")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test that cannot go on fails on the spot"
)]

use std::collections::BTreeSet;
use std::path::PathBuf;

/// One exported name: the module path that exports it, and the name.
type Exported = BTreeSet<(String, String)>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The file holding module `path` (`["backend", "pkcs11"]`).
fn module_file(path: &[String]) -> PathBuf {
    let src = root().join("src");
    if path.is_empty() {
        return src.join("lib.rs");
    }
    let flat = src.join(path.join("/") + ".rs");
    if flat.exists() {
        flat
    } else {
        src.join(path.join("/")).join("mod.rs")
    }
}

/// The names a `use` tree brings in: `a::{b::C, D as E, self}` gives C, E
/// and a.
fn use_names(tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let prefix = tree[..open].trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    one_use(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        one_use(&inner[start..], prefix, out);
    } else {
        one_use(tree, "", out);
    }
}

fn one_use(part: &str, prefix: &str, out: &mut Vec<String>) {
    let part = part.trim();
    if part.is_empty() {
        return;
    }
    if part.contains('{') {
        use_names(part, out);
    } else if let Some((_, alias)) = part.split_once(" as ") {
        out.push(alias.trim().to_owned());
    } else if part == "self" {
        out.push(prefix.rsplit("::").next().unwrap().to_owned());
    } else {
        out.push(part.rsplit("::").next().unwrap().to_owned());
    }
}

/// What module `path` exports, and (recursively) what its public modules
/// export: every declaration at the start of a line that says `pub ` (not
/// `pub(crate)`), whatever `cfg` it is under.
fn declared(path: &[String], out: &mut Exported) {
    let file = module_file(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let module = std::iter::once("hsm_csr".to_owned())
        .chain(path.iter().cloned())
        .collect::<Vec<_>>()
        .join("::");
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("pub ") else {
            continue;
        };
        if let Some(tree) = rest.strip_prefix("use ") {
            let mut whole = tree.to_owned();
            while !whole.trim_end().ends_with(';') {
                whole.push(' ');
                whole.push_str(lines.next().expect("a pub use ends with ;"));
            }
            let mut names = Vec::new();
            use_names(whole.trim_end().trim_end_matches(';'), &mut names);
            for name in names {
                out.insert((module.clone(), name));
            }
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (kind, name) = match words.as_slice() {
            ["async" | "const" | "unsafe", "fn", name, ..] => ("fn", *name),
            [kind, name, ..] => (*kind, *name),
            _ => continue,
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            [
                "mod", "fn", "struct", "enum", "trait", "type", "const", "static"
            ]
            .contains(&kind),
            "{}: `pub {kind}` is not a kind this test knows",
            file.display()
        );
        out.insert((module.clone(), name.clone()));
        if kind == "mod" {
            let mut inner = path.to_vec();
            inner.push(name);
            declared(&inner, out);
        }
    }
}

/// The table under "## The public API" in docs/library.md: a row per
/// module, its items in backticks.
fn documented() -> Exported {
    let text = std::fs::read_to_string(root().join("docs/library.md")).unwrap();
    let section = text
        .split("\n## The public API")
        .nth(1)
        .expect("docs/library.md has a section \"## The public API\"");
    let section = section.split("\n## ").next().unwrap();
    let mut out = Exported::new();
    for row in section.lines().filter(|l| l.starts_with("| `hsm_csr")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let module = cells[1].trim_matches('`').to_owned();
        for item in cells[2].split(',') {
            let item = item.trim().trim_matches('`');
            assert!(!item.is_empty(), "an empty item in the row of {module}");
            assert!(
                out.insert((module.clone(), item.to_owned())),
                "{module}::{item} is listed twice"
            );
        }
    }
    out
}

#[test]
fn the_public_items_are_those_docs_library_md_lists() {
    let mut source = Exported::new();
    declared(&[], &mut source);
    let docs = documented();
    let undocumented: Vec<String> = source
        .difference(&docs)
        .map(|(m, i)| format!("{m}::{i}"))
        .collect();
    let gone: Vec<String> = docs
        .difference(&source)
        .map(|(m, i)| format!("{m}::{i}"))
        .collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "public in src/ but not in docs/library.md's table (list it there, or make it \
         pub(crate)): {undocumented:?}\nin the table but not public in src/: {gone:?}"
    );
}

#[test]
fn the_scanner_reads_use_trees_and_declarations() {
    let mut names = Vec::new();
    use_names("a::{b::{C, D as E}, self, F}", &mut names);
    assert_eq!(names, ["C", "E", "a", "F"]);
    let mut out = Exported::new();
    declared(&["backend".to_owned()], &mut out);
    assert!(out.contains(&("hsm_csr::backend".to_owned(), "KeyBackend".to_owned())));
    assert!(out.contains(&(
        "hsm_csr::backend::pkcs11".to_owned(),
        "Pkcs11Backend".to_owned()
    )));
    // pub(crate) items and indented (inner) ones are not exported.
    assert!(!out.iter().any(|(_, i)| i == "mock"));
}
