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
