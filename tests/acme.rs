//! `hsm-csr acme issue|renew` against a private pebble (tests/common/pebble.rs)
//! on loopback, with the key on a private SoftHSM2 token. Every challenge
//! is validated for real: http-01 by pebble fetching from hsm-csr's own
//! responder, dns-01 by pebble resolving the TXT record a hook set in
//! pebble-challtestsrv. Failure paths count the token's objects afterwards
//! with pkcs11-tool.
//!
//! This file holds the helpers; [`issuance`] checks certificates issued,
//! [`failures`] that a failed `issue` leaves no key, [`renewal`] `renew`.

use std::path::{Path, PathBuf};

use crate::common::pebble::{Pebble, PebbleOptions};
use crate::common::{Run, Token, openssl};

mod ari;
mod deploy;
mod failures;
mod fleet;
mod issuance;
mod profiles;
mod rate_limit;
mod renewal;
mod status;
mod tokens;

/// A name [`blocking`]'s pebble refuses (`rejectedIdentifier`).
const BLOCKED: &str = "blocked.example.test";

/// A pebble that refuses [`BLOCKED`].
fn blocking() -> Pebble {
    Pebble::start_with(PebbleOptions {
        domain_blocklist: vec![BLOCKED.to_owned()],
        ..PebbleOptions::default()
    })
}

/// A pebble whose certificates last `secs` seconds.
fn lasting(secs: u64) -> Pebble {
    Pebble::start_with(PebbleOptions {
        cert_lifetime_secs: Some(secs),
        ..PebbleOptions::default()
    })
}

/// A `--dns-01-hook` that publishes the TXT record hsm-csr's hook
/// environment describes in challtestsrv (value `value` instead of the
/// right one when given).
fn dns_hook(ca: &Pebble, value: Option<&str>) -> String {
    let value = value.unwrap_or("$HSM_CSR_ACME_VALIDATION");
    format!(
        "curl -sSf --max-time 10 -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$HSM_CSR_ACME_DOMAIN.\\\",\\\"value\\\":\\\"{value}\\\"}}\" http://127.0.0.1:{}/set-txt",
        ca.challtestsrv_port
    )
}

/// A `--dns-01-cleanup` that removes it.
fn dns_cleanup(ca: &Pebble) -> String {
    format!(
        "curl -sSf --max-time 10 -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$HSM_CSR_ACME_DOMAIN.\\\"}}\" http://127.0.0.1:{}/clear-txt",
        ca.challtestsrv_port
    )
}

/// Seconds since the epoch of an RFC 3339 time, as `date` reads it.
fn unix(rfc3339: &str) -> u64 {
    let out = std::process::Command::new("date")
        .args(["-u", "+%s", "-d", rfc3339])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Private keys and certificates on the token, as pkcs11-tool lists them.
fn objects(token: &Token) -> (usize, usize) {
    let list = token.pkcs11_tool(&["--list-objects"]);
    (
        list.matches("Private Key Object").count(),
        list.matches("Certificate Object").count(),
    )
}

/// An ACME server the tests start: pebble, or acme2certifier for ARI.
trait Ca {
    fn directory_url(&self) -> String;
    /// The root of its HTTPS listener's certificate.
    fn tls_ca(&self) -> PathBuf;
}

impl Ca for Pebble {
    fn directory_url(&self) -> String {
        Pebble::directory_url(self)
    }
    fn tls_ca(&self) -> PathBuf {
        Pebble::tls_ca(self)
    }
}

impl Ca for crate::common::a2c::Acme2Certifier {
    fn directory_url(&self) -> String {
        crate::common::a2c::Acme2Certifier::directory_url(self)
    }
    fn tls_ca(&self) -> PathBuf {
        crate::common::a2c::Acme2Certifier::tls_ca(self)
    }
}

/// The account file for `ca` (one per CA: an account belongs to one
/// directory, and each CA a test starts has a port of its own).
fn account(token: &Token, ca: &impl Ca) -> PathBuf {
    let url = ca.directory_url();
    let port = url.rsplit(':').next().unwrap_or_default().replace('/', "_");
    token.dir().join(format!("account-{port}.json"))
}

/// `acme SUB` with the CA, account and token flags, then `args`.
fn acme(token: &Token, ca: &impl Ca, sub: &str, args: &[&str]) -> Run {
    acme_as(token, ca, &account(token, ca), sub, args)
}

/// [`acme`] with the account file `account`.
fn acme_as(token: &Token, ca: &impl Ca, account: &Path, sub: &str, args: &[&str]) -> Run {
    let mut all = flags_with(token, ca, account);
    if !args.contains(&"--timeout") {
        all.extend(["--timeout".to_owned(), "20".to_owned()]);
    }
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    token.run(&["acme", sub], &all)
}

/// The CA, account and label flags [`acme`] passes.
fn acme_flags(token: &Token, ca: &impl Ca) -> Vec<String> {
    flags_with(token, ca, &account(token, ca))
}

fn flags_with(token: &Token, ca: &impl Ca, account: &Path) -> Vec<String> {
    [
        "--directory",
        &ca.directory_url(),
        "--ca-root",
        ca.tls_ca().to_str().unwrap(),
        "--account",
        account.to_str().unwrap(),
        "--agree-tos",
        "--label-prefix",
        &token.prefix,
        "--validation-timeout",
        "60",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// An http-01 address nobody looks at (a CA that does not validate).
fn http_01_anywhere() -> String {
    format!("127.0.0.1:{}", crate::common::ports::free_port())
}

fn http_01(ca: &Pebble) -> String {
    format!("127.0.0.1:{}", ca.http01_port)
}

/// The MD5 of a PEM certificate's DER public key, as openssl computes it.
fn cert_pub_md5(pem: &str) -> String {
    let pubkey = openssl(&["x509", "-pubkey", "-noout"], pem.as_bytes());
    let der = openssl(&["pkey", "-pubin", "-outform", "DER"], &pubkey);
    let md5 = openssl(&["md5", "-r"], &der);
    String::from_utf8(md5)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The chain file verifies up to pebble's issuing root, and its leaf has
/// the key `pub_md5` names.
fn check_chain(ca: &Pebble, chain: &Path, pub_md5: &str) -> String {
    let pem = std::fs::read_to_string(chain).unwrap();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");
    let dir = chain.parent().unwrap();
    let root = dir.join("issuer-root.pem");
    std::fs::write(&root, ca.issuer_root_pem()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(chain)
        .arg(chain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cert_pub_md5(&pem), pub_md5);
    String::from_utf8(openssl(&["x509", "-noout", "-text"], pem.as_bytes())).unwrap()
}
