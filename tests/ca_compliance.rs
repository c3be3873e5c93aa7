//! The CSRs `create` makes are accepted by a real ACME CA through a client
//! nobody here wrote: Debian's `pebble`, and `certbot certonly --csr`. Each
//! certificate must be issued, name what the CSR names, chain to pebble's
//! root, and carry the token's key (its public key's MD5 is the `PubMd5`).
//!
//! certbot orders every name in the CSR, the subject CN included, and
//! pebble (like Let's Encrypt) refuses an order whose names differ from the
//! CSR's SANs: a CN left out of the SANs, or a CN that is a U-label while
//! the SAN is its A-label, fails here (see docs/csr-rules.md).
//!
//! Validation is real unless a case says otherwise: http-01 against
//! certbot's standalone server on 127.0.0.1, dns-01 through challtestsrv's
//! TXT records; pebble resolves every name to 127.0.0.1 through
//! challtestsrv.

use std::path::Path;
use std::process::Command;

use crate::common::pebble::{Pebble, PebbleOptions};
use crate::common::{Token, openssl};

/// How certbot proves control of the names.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Validation {
    /// http-01, answered by `certbot --standalone`, checked by pebble.
    Http01,
    /// dns-01, a TXT record published in challtestsrv by certbot's manual
    /// hook, checked by pebble.
    Dns01,
    /// pebble in `PEBBLE_VA_ALWAYS_VALID` mode; certbot's hook does nothing.
    AlwaysValid,
}

/// What certbot got.
struct Issued {
    cert_pem: String,
    /// `openssl x509 -text` of the leaf.
    text: String,
}

/// Runs `create ARGS` on a fresh token, has certbot get a certificate for
/// the CSR from a fresh pebble, and checks the certificate against the
/// response. None when the token lacks `case` (e.g. Ed25519).
fn issue(case: &str, args: &[&str], how: Validation) -> Option<Issued> {
    let token = Token::new();
    let run = token.create_case(case, args)?;
    let v = run.json();
    let csr = v["Csr"].as_str().unwrap();
    let pebble = Pebble::start_with(PebbleOptions {
        always_valid: matches!(how, Validation::AlwaysValid),
        ..PebbleOptions::default()
    });
    let cert_pem = match certbot_csr(&pebble, csr, how) {
        Ok(pem) => pem,
        Err(why) => panic!(
            "{case}: certbot got no certificate for\n{}\n{why}",
            crate::common::verified_text(csr)
        ),
    };

    // The certificate carries the token's key.
    let pubkey = openssl(&["x509", "-pubkey", "-noout"], cert_pem.as_bytes());
    let der = openssl(&["pkey", "-pubin", "-outform", "DER"], &pubkey);
    let md5 = String::from_utf8(openssl(&["md5", "-r"], &der)).unwrap();
    assert_eq!(
        md5.split_whitespace().next().unwrap(),
        v["PubMd5"].as_str().unwrap(),
        "{case}: the certificate's key is not the token's"
    );
    // It chains to the pebble root of this run.
    let root = pebble.dir().join("root.pem");
    std::fs::write(&root, pebble.issuer_root_pem()).unwrap();
    let chain = pebble.dir().join("intermediate.pem");
    std::fs::write(&chain, pebble.issuer_intermediate_pem()).unwrap();
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(&chain)
        .arg(pebble.dir().join("certbot/cert.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let text =
        String::from_utf8(openssl(&["x509", "-noout", "-text"], cert_pem.as_bytes())).unwrap();
    Some(Issued { cert_pem, text })
}

/// `certbot certonly --csr` against `pebble`; the leaf certificate's PEM,
/// or what certbot and its log said.
pub(crate) fn certbot_csr(
    pebble: &Pebble,
    csr_pem: &str,
    how: Validation,
) -> Result<String, String> {
    let dir = pebble.dir().join("certbot");
    std::fs::create_dir_all(&dir).unwrap();
    let csr = dir.join("request.csr");
    std::fs::write(&csr, csr_pem).unwrap();
    let mut cmd = Command::new("certbot");
    cmd.args(["certonly", "--non-interactive", "--agree-tos"])
        .args(["--register-unsafely-without-email", "--no-eff-email"])
        .args(["--server", &pebble.directory_url()])
        .arg("--csr")
        .arg(&csr)
        .arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--work-dir")
        .arg(dir.join("work"))
        .arg("--logs-dir")
        .arg(dir.join("logs"))
        .arg("--cert-path")
        .arg(dir.join("cert.pem"))
        .arg("--chain-path")
        .arg(dir.join("chain.pem"))
        .arg("--fullchain-path")
        .arg(dir.join("fullchain.pem"))
        .env("REQUESTS_CA_BUNDLE", pebble.tls_ca())
        // certbot logs an early refusal to a new directory under TMPDIR.
        .env("TMPDIR", &dir);
    match how {
        Validation::Http01 => cmd
            .args(["--standalone", "--preferred-challenges", "http"])
            .args(["--http-01-address", "127.0.0.1"])
            .args(["--http-01-port", &pebble.http01_port.to_string()]),
        Validation::Dns01 => cmd
            .args(["--manual", "--preferred-challenges", "dns"])
            .args(["--manual-auth-hook", &pebble.certbot_dns_hook()]),
        Validation::AlwaysValid => cmd
            .args(["--manual", "--preferred-challenges", "http"])
            .args(["--manual-auth-hook", "true"]),
    };
    let out = cmd.output().expect("certbot (Debian package certbot)");
    let cert = dir.join("cert.pem");
    if out.status.success() && cert.exists() {
        return Ok(std::fs::read_to_string(cert).unwrap());
    }
    Err(format!(
        "certbot: {}\n{}\nACME errors in its log:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        acme_errors(&dir.join("logs/letsencrypt.log")),
        pebble.log()
    ))
}

/// The CA's problem documents in certbot's debug log (certbot itself
/// sometimes reports only a follow-on Python error).
fn acme_errors(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("urn:ietf:params:acme:error"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The dNSName and iPAddress entries of the certificate's SAN extension.
fn san_line(text: &str) -> &str {
    let at = text
        .find("X509v3 Subject Alternative Name:")
        .expect("certificate has no SAN extension");
    text[at..].lines().nth(1).unwrap().trim()
}

fn subject_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.trim_start().starts_with("Subject:"))
        .unwrap()
        .trim()
}

#[test]
fn rsa_through_http01() {
    let got = issue("rsa", &["--common-name", "rsa.example"], Validation::Http01).unwrap();
    assert_eq!(san_line(&got.text), "DNS:rsa.example");
    assert!(got.text.contains("rsaEncryption"), "{}", got.text);
}

#[test]
fn ec_p256_through_http01() {
    let args = ["--common-name", "p256.example", "--key-type", "ec-p256"];
    let got = issue("ec-p256", &args, Validation::Http01).unwrap();
    assert!(got.text.contains("NIST CURVE: P-256"), "{}", got.text);
}

#[test]
fn ec_p384_through_http01() {
    let args = ["--common-name", "p384.example", "--key-type", "ec-p384"];
    let got = issue("ec-p384", &args, Validation::Http01).unwrap();
    assert!(got.text.contains("NIST CURVE: P-384"), "{}", got.text);
}

#[test]
fn rsa_pss_through_http01() {
    let args = ["--common-name", "pss.example", "--pss"];
    issue("rsa-pss", &args, Validation::Http01);
}

#[test]
fn ed25519_through_http01() {
    let args = ["--common-name", "ed.example", "--key-type", "ed25519"];
    if let Some(got) = issue("ed25519", &args, Validation::Http01) {
        assert!(got.text.contains("ED25519"), "{}", got.text);
    }
}

#[test]
fn ip_address_san_through_http01() {
    // pebble validates an IP identifier by fetching from that address.
    let args = [
        "--common-name",
        "ip.example",
        "--sans",
        "ip.example,127.0.0.1",
    ];
    let got = issue("rsa", &args, Validation::Http01).unwrap();
    assert_eq!(san_line(&got.text), "DNS:ip.example, IP Address:127.0.0.1");
}

#[test]
fn wildcard_through_dns01() {
    let args = ["--common-name", "*.wild.example", "--key-type", "ec-p256"];
    let got = issue("ec-p256", &args, Validation::Dns01).unwrap();
    assert_eq!(san_line(&got.text), "DNS:*.wild.example");
}

#[test]
fn wildcard_and_its_base_through_dns01() {
    let args = [
        "--common-name",
        "base.example",
        "--sans",
        "*.base.example",
        "--key-type",
        "ec-p256",
    ];
    let got = issue("ec-p256", &args, Validation::Dns01).unwrap();
    let sans = san_line(&got.text);
    assert!(
        sans == "DNS:base.example, DNS:*.base.example"
            || sans == "DNS:*.base.example, DNS:base.example",
        "{sans}"
    );
}

/// The issue's first refusal: certbot orders the CN too, and pebble refuses
/// an order whose names are not the CSR's SANs.
#[test]
fn common_name_left_out_of_the_sans_through_http01() {
    let args = [
        "--common-name",
        "cn.example",
        "--sans",
        "other.example",
        "--key-type",
        "ec-p256",
    ];
    let got = issue("ec-p256", &args, Validation::Http01).unwrap();
    let sans = san_line(&got.text);
    assert!(sans.contains("DNS:cn.example"), "{sans}");
    assert!(sans.contains("DNS:other.example"), "{sans}");
}

/// The issue's second refusal: an IDN common name must be the A-label.
#[test]
fn idn_common_name_through_http01() {
    let args = ["--common-name", "bücher.example", "--key-type", "ec-p256"];
    let got = issue("ec-p256", &args, Validation::Http01).unwrap();
    assert_eq!(san_line(&got.text), "DNS:xn--bcher-kva.example");
    assert!(
        subject_line(&got.text).contains("xn--bcher-kva.example"),
        "{}",
        subject_line(&got.text)
    );
}

/// The same IDN, the CA checking nothing but the CSR against the order.
#[test]
fn idn_common_name_in_always_valid_mode() {
    let args = [
        "--common-name",
        "bücher.example",
        "--sans",
        "www.bücher.example",
    ];
    let got = issue("rsa", &args, Validation::AlwaysValid).unwrap();
    let sans = san_line(&got.text);
    assert!(sans.contains("DNS:xn--bcher-kva.example"), "{sans}");
    assert!(sans.contains("DNS:www.xn--bcher-kva.example"), "{sans}");
    assert!(got.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
}
