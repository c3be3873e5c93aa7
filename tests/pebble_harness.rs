//! The pebble harness (tests/common/pebble.rs) does what the ACME tests
//! rely on: challtestsrv answers the DNS records and http-01 responses it
//! is given, and a short certificate lifetime is honoured.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use crate::ca_compliance::{Validation, certbot_csr};
use crate::common::pebble::{Pebble, PebbleOptions};

const TXT: u16 = 16;
const A: u16 = 1;

/// One DNS query (RFC 1035 section 4.1) to challtestsrv over UDP; the raw
/// answer.
fn query(pebble: &Pebble, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.send_to(&q, ("127.0.0.1", pebble.dns_port)).unwrap();
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).expect("challtestsrv answered");
    assert_eq!(&buf[..2], &[0x12, 0x34], "answer to another query");
    buf[..n].to_vec()
}

fn answers(reply: &[u8]) -> u16 {
    u16::from_be_bytes([reply[6], reply[7]])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn challtestsrv_answers_what_the_harness_publishes() {
    let pebble = Pebble::start_with(PebbleOptions {
        challtestsrv_http01: true,
        ..PebbleOptions::default()
    });

    pebble.set_txt("_acme-challenge.txt.example", "digest-value-1");
    let reply = query(&pebble, "_acme-challenge.txt.example", TXT);
    assert_eq!(answers(&reply), 1);
    assert!(contains(&reply, b"digest-value-1"), "{reply:?}");
    pebble.clear_txt("_acme-challenge.txt.example");
    let reply = query(&pebble, "_acme-challenge.txt.example", TXT);
    assert!(!contains(&reply, b"digest-value-1"), "{reply:?}");

    // Every name is loopback by default; A records and the default can change.
    let reply = query(&pebble, "any.example", A);
    assert!(contains(&reply, &[0, 4, 127, 0, 0, 1]), "{reply:?}");
    pebble.add_a("a.example", "127.0.0.2");
    let reply = query(&pebble, "a.example", A);
    assert!(contains(&reply, &[0, 4, 127, 0, 0, 2]), "{reply:?}");
    pebble.set_default_ipv4("127.0.0.3");
    let reply = query(&pebble, "other.example", A);
    assert!(contains(&reply, &[0, 4, 127, 0, 0, 3]), "{reply:?}");

    pebble.add_http01("tok3n", "tok3n.thumbprint");
    let out = Command::new("curl")
        .args(["-sSf", "--max-time", "10"])
        .arg(format!(
            "http://127.0.0.1:{}/.well-known/acme-challenge/tok3n",
            pebble.http01_port
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tok3n.thumbprint");

    assert!(
        pebble
            .issuer_root_pem()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(pebble.directory_url().ends_with("/dir"));
}

#[test]
fn a_short_certificate_lifetime_is_honoured() {
    let pebble = Pebble::start_with(PebbleOptions {
        always_valid: true,
        cert_lifetime_secs: Some(600),
        ..PebbleOptions::default()
    });
    let key = pebble.dir().join("key.pem");
    let csr = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=short.example",
        ])
        .args(["-addext", "subjectAltName=DNS:short.example", "-keyout"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(csr.status.success());
    let csr = String::from_utf8(csr.stdout).unwrap();
    let cert =
        certbot_csr(&pebble, &csr, Validation::AlwaysValid).unwrap_or_else(|e| panic!("{e}"));
    let checkend = |secs: &str| {
        let path = pebble.dir().join("short.pem");
        std::fs::write(&path, &cert).unwrap();
        Command::new("openssl")
            .args(["x509", "-noout", "-checkend", secs, "-in"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(checkend("0"), "already expired");
    assert!(!checkend("3600"), "valid for more than the 600 s asked for");
}
