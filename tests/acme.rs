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

mod failures;
mod issuance;
mod renewal;

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

/// Private keys and certificates on the token, as pkcs11-tool lists them.
fn objects(token: &Token) -> (usize, usize) {
    let list = token.pkcs11_tool(&["--list-objects"]);
    (
        list.matches("Private Key Object").count(),
        list.matches("Certificate Object").count(),
    )
}

fn account(token: &Token, ca: &Pebble) -> PathBuf {
    token.dir().join(format!(
        "account-{}.json",
        ca.directory_url().len() + ca.http01_port as usize
    ))
}

/// `acme SUB` with the CA, account and token flags, then `args`.
fn acme(token: &Token, ca: &Pebble, sub: &str, args: &[&str]) -> Run {
    acme_as(token, ca, &account(token, ca), sub, args)
}

/// [`acme`] with the account file `account`.
fn acme_as(token: &Token, ca: &Pebble, account: &Path, sub: &str, args: &[&str]) -> Run {
    let directory = ca.directory_url();
    let ca_root = ca.tls_ca();
    let mut all: Vec<&str> = vec![
        "--directory",
        &directory,
        "--ca-root",
        ca_root.to_str().unwrap(),
        "--account",
        account.to_str().unwrap(),
        "--agree-tos",
        "--label-prefix",
        &token.prefix,
        "--validation-timeout",
        "60",
    ];
    if !args.contains(&"--timeout") {
        all.extend(["--timeout", "20"]);
    }
    all.extend_from_slice(args);
    token.run(&["acme", sub], &all)
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
