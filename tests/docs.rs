//! The README a newcomer follows: short, its links lead somewhere, and the
//! quick start's sample answer is what the script prints by default.

use crate::common::repo;

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

#[test]
fn the_readme_stays_short() {
    let lines = readme().lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; move detail to docs/"
    );
}

#[test]
fn the_quick_start_sample_is_the_default_answer() {
    let text = readme();
    let start = text.find("```json\n").expect("a JSON sample in the README");
    let body = &text[start + 8..];
    let sample: serde_json::Value =
        serde_json::from_str(&body[..body.find("```").unwrap()]).expect("the sample is JSON");
    let script = std::fs::read_to_string(repo().join("scripts/quickstart.sh")).unwrap();
    assert!(
        script.contains("common_name=${1:-www.example.com}"),
        "{script}"
    );
    assert_eq!(sample["CommonName"], "www.example.com");
    let md5 = sample["PubMd5"].as_str().unwrap();
    assert!(
        md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit()),
        "{md5}"
    );
    assert!(
        sample["Csr"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
    );
    let uri = sample["KeyUri"].as_str().unwrap();
    assert!(uri.starts_with("pkcs11:token=hsm-csr-demo;"), "{uri}");
    assert!(uri.contains("www.example.com;id="), "{uri}");
}

#[test]
fn every_relative_link_in_the_docs_leads_to_a_file() {
    let mut pages = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    for page in pages
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(page).unwrap();
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').unwrap_or(0)];
            if target.is_empty() || target.contains("://") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap();
            let resolved = page.parent().unwrap().join(path);
            assert!(
                resolved.exists(),
                "{}: link to {target} leads nowhere",
                page.display()
            );
        }
    }
}

/// The text of the first fenced block of `lang` in the README that holds
/// `needle`.
fn block(lang: &str, needle: &str) -> String {
    let text = readme();
    let fence = format!("```{lang}\n");
    text.match_indices(&fence)
        .map(|(i, _)| {
            let body = &text[i + fence.len()..];
            body[..body.find("```").unwrap()].to_owned()
        })
        .find(|b| b.contains(needle))
        .unwrap_or_else(|| panic!("no ```{lang} block with {needle:?} in README.md"))
}

/// The README's calls to `serve`, as a newcomer runs them: the `pip
/// install` line names every package the SDK snippet imports, and the
/// snippet and the `hsm-csr call` line, run as written against a server
/// with the README's access key (only the endpoint changed to the test
/// server's), each get a CSR that `openssl req -verify` accepts.
#[test]
fn the_readme_calls_get_a_csr_from_serve() {
    use crate::common::server::{Launch, Server};
    use crate::common::{Token, python, verified_text};
    let snippet = block("python", "alibabacloud_cdn20180510");
    let pip = block("sh", "pip install ");
    let pip = pip.lines().find(|l| l.starts_with("pip install ")).unwrap();
    for line in snippet.lines() {
        let module = line
            .strip_prefix("from ")
            .or_else(|| line.strip_prefix("import "))
            .and_then(|rest| rest.split(['.', ' ']).next())
            .filter(|m| m.starts_with("alibabacloud"));
        if let Some(module) = module {
            let package = module.replace('_', "-");
            assert!(
                pip.split_whitespace().any(|p| p == package),
                "the README imports {module} but its pip line lacks {package}: {pip}"
            );
        }
    }

    let token = Token::new();
    let env = [("HSM_CSR_SECRET_OPS", "ops-s3cret")];
    let server = Server::launch_on(
        &token,
        &Server::config(&token, "ec-p256", "").access_key(
            "LTAI-ops",
            "HSM_CSR_SECRET_OPS",
            "[\"cdn:CreateCdnCertificateSigningRequest\"]",
        ),
        &Launch {
            env: &env,
            ..Launch::default()
        },
    );
    let endpoint = |text: &str| {
        assert!(text.contains("127.0.0.1:8080"), "{text}");
        text.replace("127.0.0.1:8080", &server.addr)
    };

    let out = std::process::Command::new(python())
        .args(["-c", &endpoint(&snippet)])
        .env("HSM_CSR_SECRET_OPS", "ops-s3cret")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (md5, csr) = printed.split_once(' ').unwrap();
    assert_eq!(md5.len(), 32, "{printed}");
    assert!(verified_text(csr).contains("CN=www.example.com"));

    let call = block("sh", "ACCESS_KEY_ID=LTAI-ops").replace("\\\n", " ");
    let call = call.lines().find(|l| l.contains("hsm-csr call")).unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_hsm-csr"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &endpoint(call)])
        .env("PATH", path)
        .env("HSM_CSR_SECRET_OPS", "ops-s3cret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{call}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(verified_text(answer["Csr"].as_str().unwrap()).contains("CN=www.example.com"));
    drop(server);
}

/// docs/testing.md names every Debian package the scripts install, and
/// only those: the union of their `need_packages` lines.
#[test]
fn testing_md_names_the_packages_the_scripts_install() {
    let mut installed = std::collections::BTreeSet::new();
    for dir in ["scripts", "scripts/tokens"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "sh") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap().replace("\\\n", " ");
            for line in text.lines() {
                let Some(at) = line.find("need_packages ") else {
                    continue;
                };
                if line.trim_start().starts_with('#') || line.contains("need_packages() {") {
                    continue;
                }
                let args = line[at + "need_packages ".len()..]
                    .split([';', '#', ')', '}', '|', '&'])
                    .next()
                    .unwrap();
                installed.extend(args.split_whitespace().map(str::to_owned));
            }
        }
    }
    let doc = std::fs::read_to_string(repo().join("docs/testing.md")).unwrap();
    let start = doc
        .find("Debian packages, ")
        .expect("the package list in testing.md");
    let list = &doc[start..];
    let list = &list[list.find('`').unwrap() + 1..];
    let list = &list[..list.find('`').unwrap()];
    let named: std::collections::BTreeSet<String> =
        list.split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        named, installed,
        "docs/testing.md's list against the scripts'"
    );
    let count = format!("Debian packages, {} by name", named.len());
    assert!(doc.contains(&count), "testing.md should say {count:?}");
}

/// Expands `a/{b,c}.rs` into `a/b.rs` and `a/c.rs` (one brace group).
fn expand(path: &str) -> Vec<String> {
    match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) if open < close => path[open + 1..close]
            .split(',')
            .map(|part| format!("{}{part}{}", &path[..open], &path[close + 1..]))
            .collect(),
        _ => vec![path.to_owned()],
    }
}

/// Every `.rs` file under `dir`, as `src/...` paths.
fn sources(dir: &std::path::Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(repo()).unwrap();
            out.push(relative.to_string_lossy().into_owned());
        }
    }
}

/// docs/library.md's layout table names every source file (a path, a
/// `{a,b}` group, or a folder ending in `/`), and nothing that is gone.
/// Unit-test files (`tests.rs`, `tests/`, `*_tests.rs`) are their module's.
#[test]
fn the_layout_table_names_every_source_file() {
    let doc = std::fs::read_to_string(repo().join("docs/library.md")).unwrap();
    let layout = doc
        .split("\n## Source layout")
        .nth(1)
        .expect("docs/library.md has a section \"## Source layout\"");
    let mut named: Vec<String> = Vec::new();
    for row in layout.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split(" | ").next().unwrap();
        for (i, part) in cell.split('`').enumerate() {
            if i % 2 == 1 {
                named.extend(expand(part));
            }
        }
    }
    for path in &named {
        assert!(
            repo().join(path).exists(),
            "docs/library.md names {path}, which does not exist"
        );
    }
    let mut files = Vec::new();
    sources(&repo().join("src"), &mut files);
    let missing: Vec<&String> = files
        .iter()
        .filter(|f| {
            !(f.ends_with("/tests.rs") || f.contains("/tests/") || f.ends_with("_tests.rs"))
        })
        .filter(|f| {
            !named
                .iter()
                .any(|n| *n == **f || (n.ends_with('/') && f.starts_with(n.as_str())))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/library.md's layout table does not name: {missing:?}"
    );
}
