//! The rules of docs/csr-rules.md through `create` and through `serve`,
//! read back with openssl: a common name that is a domain name or an IP
//! address is among the SANs exactly once, and the subject carries it as
//! the SAN does (A-label, canonical address), while the response's
//! `CommonName` echoes what the caller sent.

use serde_json::Value;

use crate::common::rpc::{get, signed_query};
use crate::common::server::Server;
use crate::common::{Token, openssl, openssl_pub_md5, verified_text};

/// The subject commonName as `openssl asn1parse` shows it: (string type, value).
fn subject_cn(csr: &str) -> (String, String) {
    let parsed = String::from_utf8(openssl(&["asn1parse"], csr.as_bytes())).unwrap();
    let lines: Vec<&str> = parsed.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("OBJECT") && l.trim_end().ends_with(":commonName"))
        .unwrap_or_else(|| panic!("no commonName in\n{parsed}"));
    let (_, rest) = lines[at + 1].split_once("prim:").unwrap();
    let (kind, value) = rest.split_once(':').unwrap();
    (kind.trim().to_owned(), value.to_owned())
}

/// The SAN line of `openssl req -text`.
fn sans(csr: &str) -> String {
    let text = verified_text(csr);
    let at = text
        .find("X509v3 Subject Alternative Name:")
        .unwrap_or_else(|| panic!("no SAN extension in\n{text}"));
    text[at..].lines().nth(1).unwrap().trim().to_owned()
}

/// (CommonName, SANs) -> (CommonName echoed, subject CN, SAN line).
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "cn.example",
        "other.example",
        "cn.example",
        "DNS:cn.example, DNS:other.example",
    ),
    (
        "bücher.example",
        "www.bücher.example",
        "xn--bcher-kva.example",
        "DNS:xn--bcher-kva.example, DNS:www.xn--bcher-kva.example",
    ),
    (
        "Shop.Example.COM",
        "a.example,SHOP.example.com",
        "shop.example.com",
        "DNS:a.example, DNS:shop.example.com",
    ),
    (
        "*.Bücher.example",
        "xn--bcher-kva.example",
        "*.xn--bcher-kva.example",
        "DNS:*.xn--bcher-kva.example, DNS:xn--bcher-kva.example",
    ),
    (
        "2001:DB8:0::1",
        "a.example",
        "2001:db8::1",
        "IP Address:2001:DB8:0:0:0:0:0:1, DNS:a.example",
    ),
    (
        "10.0.0.1",
        "a.example,10.0.0.1",
        "10.0.0.1",
        "DNS:a.example, IP Address:10.0.0.1",
    ),
];

fn check(case: &str, v: &Value, cn: &str, want_cn: &str, want_sans: &str) {
    let csr = v["Csr"].as_str().unwrap();
    assert_eq!(v["CommonName"], cn, "{case}: CommonName echoes the caller");
    let (_, subject) = subject_cn(csr);
    assert_eq!(subject, want_cn, "{case}: subject CN bytes");
    assert_eq!(sans(csr), want_sans, "{case}");
    assert_eq!(v["PubMd5"].as_str().unwrap(), openssl_pub_md5(csr));
}

#[test]
fn create_puts_the_common_name_among_the_sans_in_their_form() {
    let token = Token::new();
    for (cn, list, want_cn, want_sans) in CASES {
        let v = token
            .create(&["--common-name", cn, "--sans", list])
            .ok()
            .json();
        check(&format!("create {cn}"), &v, cn, want_cn, want_sans);
    }
    // The key label carries the name as sent, as before.
    let labels: Vec<String> = token
        .keys()
        .iter()
        .filter_map(|k| k["label"].as_str().map(str::to_owned))
        .collect();
    assert!(
        labels.iter().any(|l| l.ends_with("bücher.example")),
        "{labels:?}"
    );
}

#[test]
fn create_without_sans_still_makes_the_common_name_the_san() {
    let token = Token::new();
    let v = token
        .create(&["--common-name", "bücher.example"])
        .ok()
        .json();
    check(
        "no SANs",
        &v,
        "bücher.example",
        "xn--bcher-kva.example",
        "DNS:xn--bcher-kva.example",
    );
    let v = token
        .create(&["--common-name", "Internal Service", "--sans", "a.example"])
        .ok()
        .json();
    let csr = v["Csr"].as_str().unwrap();
    assert_eq!(subject_cn(csr).1, "Internal Service");
    assert_eq!(
        sans(csr),
        "DNS:a.example",
        "a CN that names no host adds no SAN"
    );
}

#[test]
fn an_a_label_too_long_for_a_common_name_is_refused_before_keygen() {
    let token = Token::new();
    let cn = format!("{}.{}", "ü".repeat(30), "ü".repeat(30));
    let run = token.create(&["--common-name", &cn]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("InvalidValue.Malformed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("as an A-label"), "{}", run.stderr);
    assert!(token.keys().is_empty(), "a refused request made a key");
}

#[test]
fn serve_puts_the_common_name_among_the_sans_in_their_form() {
    let Some(token) = Token::private_softhsm("the service suite runs on a private token") else {
        return;
    };
    let server = Server::start(&token, "ec-p256", "");
    for (cn, list, want_cn, want_sans) in CASES {
        let answer = get(
            &server.addr,
            &signed_query("MainKey", "s3cret", &[("CommonName", cn), ("SANs", list)]),
        );
        assert_eq!(answer.status, 200, "serve {cn}: {answer:?}");
        let v: Value = serde_json::from_str(&answer.body).unwrap();
        check(&format!("serve {cn}"), &v, cn, want_cn, want_sans);
    }
    let cn = format!("{}.{}", "ü".repeat(30), "ü".repeat(30));
    let answer = get(
        &server.addr,
        &signed_query("MainKey", "s3cret", &[("CommonName", &cn)]),
    );
    assert_eq!(answer.code, "InvalidValue.Malformed", "{answer:?}");
    assert_eq!(token.keys().len(), 2 * CASES.len(), "one key pair per CSR");
}
