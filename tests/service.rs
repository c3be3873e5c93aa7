//! `hsm-csr serve` on 127.0.0.1, called through the official Alibaba Cloud
//! SDKs (tests/sdk/check_sdks.py), with private SoftHSM2 tokens.

use std::process::Command;

use crate::common::serve_config::ServeConfig;
use crate::common::server::{Server, call, call_in_flight, metric, wait_for};
use crate::common::{Token, python, repo, skip_part};

#[test]
fn official_sdks_call_both_actions_with_both_signatures() {
    let main = Token::new();
    let burst = Token::new();
    let server = Server::start(&main, "rsa", "");
    // The burst server makes EC keys: 100 RSA keygens outlast the SDK's
    // 10 s read time-out.
    let burst_server = if burst.lacks("ec-p256") {
        skip_part(
            &burst,
            "the burst of 150 calls needs EC keys: 100 RSA keygens outlast the SDK's 10 s read time-out",
        );
        None
    } else if burst.keys_per_process() < 100 {
        skip_part(
            &burst,
            "the burst of 150 calls makes 100 keys in one process, more than the token allows",
        );
        None
    } else {
        Some(Server::start(&burst, "ec-p256", "rate_limit = 100"))
    };
    let health = server.get("/healthz").unwrap();
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#""LoggedIn":true"#),
        "{health}"
    );

    let out = Command::new(python())
        .arg(repo().join("tests/sdk/check_sdks.py"))
        .env("HSM_CSR_ENDPOINT", &server.addr)
        .env("HSM_CSR_AK_ID", "MainKey")
        .env("HSM_CSR_AK_SECRET", "s3cret")
        .env("HSM_CSR_CDN_ONLY_ID", "CdnOnly")
        .env("HSM_CSR_CDN_ONLY_SECRET", "cdn-s3cret")
        .env(
            "HSM_CSR_BURST_ENDPOINT",
            burst_server.as_ref().map_or("", |s| s.addr.as_str()),
        )
        .env("HSM_CSR_BURST_ID", "Burst")
        .env("HSM_CSR_BURST_SECRET", "b-s3cret")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every successful CSR left exactly one key pair; no failure left one.
    let created: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("CSRs made on the main server: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the script reports how many CSRs it made");
    let log = server.stop();
    assert_eq!(main.keys().len(), 2 * created, "{log}");
    for secret in ["s3cret", "cdn-s3cret", "1234"] {
        assert!(
            !log.contains(&format!("={secret}")),
            "a secret reached the log"
        );
    }
    assert!(log.contains("code=SignatureDoesNotMatch"), "{log}");
    if let Some(burst_server) = burst_server {
        let burst_log = burst_server.stop();
        let ok = burst_log.matches("code=OK").count();
        assert_eq!(burst.keys().len(), 2 * ok, "throttled calls made no keys");
    }
}

#[test]
fn a_request_that_times_out_keeps_no_key() {
    let token = Token::new();
    let server = Server::start(&token, "rsa", "request_timeout_ms = 1");
    let out = Command::new(python())
        .args([
            "-c",
            "import os,sys\n\
             from alibabacloud_cdn20180510.client import Client\n\
             from alibabacloud_cdn20180510 import models\n\
             from alibabacloud_tea_openapi import models as om\n\
             c=Client(om.Config(access_key_id='MainKey',access_key_secret='s3cret',endpoint=sys.argv[1],protocol='http'))\n\
             try:\n  c.create_cdn_certificate_signing_request(models.CreateCdnCertificateSigningRequestRequest(common_name='slow.example.com'))\n  print('ok')\n\
             except Exception as e:\n  print(e.code, e.status_code)\n",
            &server.addr,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        "ServiceUnavailable 503",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The worker finishes the keygen after the answer, then removes the key
    // instead of keeping it.
    server.wait_for_log("its key pair was removed");
    let log = server.stop();
    assert!(log.contains("its key pair was removed"), "{log}");
    assert!(token.keys().is_empty(), "{log}");
}

#[test]
fn wrong_pin_stops_the_start_without_retrying() {
    let Some(token) = Token::private_softhsm("a wrong PIN counts towards the token's lockout")
    else {
        return;
    };
    let config = ServeConfig::for_token(&token)
        .access_key("K", "S", "[\"*\"]")
        .write(token.dir());
    // The config's pin file holds a wrong PIN.
    std::fs::write(token.dir().join("pin"), "9999\n").unwrap();
    let mut cmd = token.hsm_csr();
    cmd.current_dir(token.dir())
        .env_remove("HSM_CSR_PIN")
        .env("S", "x")
        .args(["serve", "--config"])
        .arg(&config);
    let run = crate::common::Run::of(&mut cmd);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("Token.PinIncorrect") && run.stderr.contains("not retried"),
        "{}",
        run.stderr
    );
}

#[test]
fn oversized_requests_are_refused_before_anything_else() {
    let token = Token::new();
    let server = Server::start(
        &token,
        "rsa",
        "max_body_bytes = 1024\nmax_header_bytes = 2048",
    );
    let body = "CommonName=".to_owned() + &"a".repeat(4096);
    let big_body = format!(
        "POST /?Format=JSON HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = server.raw(big_body.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""Code":"RequestTooLarge""#), "{answer}");
    let big_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(4096)
    );
    let answer = server.raw(big_headers.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    server.stop();
    assert!(token.keys().is_empty());
}

#[test]
fn key_pool_serves_ready_keys_once_across_restarts() {
    let token = Token::new();
    let server = Server::start_with(&token, "rsa", "", "[pool]\nsize = 4\n");
    wait_for(&server, "hsm_csr_pool_depth", 4.0);
    let first = call(&server, 3);
    assert_eq!(metric(&server, "hsm_csr_pool_hits_total"), Some(3.0));
    assert_eq!(metric(&server, "hsm_csr_pool_misses_total"), Some(0.0));
    wait_for(&server, "hsm_csr_pool_depth", 4.0);
    server.stop();

    // Assigned keys carry their request's label; the rest wait, unassigned.
    let keys = token.keys();
    let unassigned = format!("{}pool:unassigned", token.prefix);
    let waiting = keys
        .iter()
        .filter(|k| k["label"] == unassigned.as_str())
        .count();
    assert_eq!(waiting, 2 * 4, "four pairs wait in the pool: {keys:?}");
    assert_eq!(keys.len(), 2 * (4 + 3));

    // A restart adopts the waiting keys and never hands out an assigned one.
    let server = Server::start_with(&token, "rsa", "", "[pool]\nsize = 4\n");
    let second = call(&server, 4);
    assert_eq!(metric(&server, "hsm_csr_pool_hits_total"), Some(4.0));
    assert_eq!(
        metric(&server, "hsm_csr_pool_keys_made_total").map(|m| m <= 4.0),
        Some(true)
    );
    let log = server.stop();
    assert!(log.contains("4 unassigned key(s) adopted"), "{log}");
    let mut all: Vec<&String> = first.iter().chain(&second).collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        7,
        "a key was handed out twice: {first:?} {second:?}"
    );
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let token = Token::new();
    let server = Server::start(&token, "rsa", "");
    // Once the request holds a session, ask the server to stop.
    let client = call_in_flight(&server);
    let log = server.stop();
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answered: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answered.len(), 1);
    assert_eq!(
        token.keys().len(),
        2,
        "the answered request's key stays, nothing else"
    );
}

#[test]
fn shutdown_deadline_cuts_off_slow_requests_and_keeps_no_key() {
    let token = Token::new();
    // RSA-4096 keygen takes SoftHSM seconds, RSA-3072 a TPM as long; the
    // deadline is far shorter.
    let slow = if token.lacks("rsa-4096") {
        "rsa-3072"
    } else {
        "rsa-4096"
    };
    let server = Server::start(&token, slow, "shutdown_timeout_ms = 50");
    let client = call_in_flight(&server);
    let log = server.stop();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success(), "the cut-off request got no answer");
    assert!(log.contains("shutdown deadline passed"), "{log}");
    assert!(log.contains("key pair was removed"), "{log}");
    assert!(token.keys().is_empty(), "{log}");
}

#[test]
fn throttled_calls_raise_the_new_sdks_throttling_exception() {
    let token = Token::new();
    let server = Server::start(&token, token.ec_or_rsa(), "rate_limit = 1");
    let out = Command::new(python())
        .args([
            "-c",
            r#"import sys
from alibabacloud_cdn20180510.client import Client
from alibabacloud_cdn20180510 import models
from alibabacloud_tea_openapi import models as om
from alibabacloud_tea_openapi.exceptions import ThrottlingException
c = Client(om.Config(access_key_id='MainKey', access_key_secret='s3cret', endpoint=sys.argv[1], protocol='http'))
r = models.CreateCdnCertificateSigningRequestRequest(common_name='t.example.com')
for i in range(3):
    try:
        c.create_cdn_certificate_signing_request(r)
        print('ok')
    except ThrottlingException as e:
        print(type(e).__name__, e.code, 0 < e.retry_after <= 1000)
"#,
            &server.addr,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.lines().next() == Some("ok")
            && said.contains("ThrottlingException Throttling.User True"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = said.lines().filter(|l| *l == "ok").count();
    server.stop();
    assert_eq!(token.keys().len(), 2 * ok, "throttled calls make no key");
}
