//! Reading a source file for the layers test: comments and literals
//! blanked, a token stream, `#[cfg(test)]` items dropped, and the module
//! paths and `use` items the file names.

use std::path::{Path, PathBuf};

use super::{ModPath, module_of};

/// One parsed source file.
pub struct File {
    pub rel: PathBuf,
    pub module: ModPath,
    /// Module paths this file names, with the 1-based line of the mention.
    pub paths: Vec<(ModPath, usize)>,
    /// `use` items: the name each binds and the path it names.
    pub uses: Vec<(String, ModPath)>,
    /// Child modules declared under `#[cfg(test)]`.
    pub test_children: Vec<String>,
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

pub fn parse(root: &Path, file: &Path) -> File {
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
