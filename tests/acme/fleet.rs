//! A fleet of short-lived certificates on one token, renewed run after run
//! on the real clock against acme2certifier's ARI windows: every name
//! renewed at least twice, none ever expired, each renewal's order naming
//! what it replaces, renewals spread over runs, at most two pairs per name
//! after pruning, and a renewal run killed with SIGKILL leaving no pair
//! without a certificate.
//!
//! `HSM_CSR_TEST_FLEET_NAMES` sets the fleet's size (default 40, which CI
//! runs; 200 for the figures, about 13 minutes here); the
//! certificates' lifetime grows with it, so that one renewal run at a
//! time keeps up. The figures are printed at the end (`--nocapture`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{acme, http_01_anywhere, unix};
use crate::common::Token;
use crate::common::a2c::{A2cOptions, Acme2Certifier};

/// Each certificate lives at least this long, and 2.4 s more per name
/// above 75; its ARI window opens at 40% of that and lasts a quarter of
/// it.
const LIFETIME_S: u64 = 180;

/// At most this share of the fleet renewed in one run.
const MOST_IN_ONE_RUN: f64 = 0.25;

/// What the token holds under the test's prefix: pairs per label, the
/// whole pairs without a certificate, and the lone halves (a SIGKILL
/// during SoftHSM2's object writes leaves one; `keys prune --orphans`
/// removes a lone public half, and leaves a delivered private one).
struct Held {
    per_label: BTreeMap<String, usize>,
    without_certificate: Vec<Value>,
    lone: Vec<Value>,
}

fn held(token: &Token) -> Held {
    let keys = token
        .run(&["keys", "list"], &["--format", "json"])
        .ok()
        .json();
    let mut held = Held {
        per_label: BTreeMap::new(),
        without_certificate: Vec::new(),
        lone: Vec::new(),
    };
    for k in keys.as_array().unwrap() {
        let label = k["Label"].as_str().unwrap_or("");
        if !label.starts_with(&token.prefix) {
            continue;
        }
        if k["HasPrivateKey"] != true || k["HasPublicKey"] != true {
            held.lone.push(k.clone());
            continue;
        }
        *held.per_label.entry(label.to_owned()).or_insert(0) += 1;
        if k["Certificate"] != true {
            held.without_certificate.push(k.clone());
        }
    }
    held
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_fleet_renews_in_the_cas_windows_spread_and_retires_what_it_replaced() {
    let Some(token) = Token::private_softhsm("counts every pair on the token") else {
        return;
    };
    let names: usize = std::env::var("HSM_CSR_TEST_FLEET_NAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let life = LIFETIME_S.max(names as u64 * 12 / 5);
    let lifetime = format!("{life}s");
    let window = format!("{}s", life / 4);
    let ca = Acme2Certifier::start(&A2cOptions {
        lifetime: Box::leak(lifetime.into_boxed_str()),
        window_start_percent: 40,
        window_length: Some(Box::leak(window.into_boxed_str())),
        retry_after_secs: 60,
        profiles: &[],
    });
    let responder = http_01_anywhere();
    let started = Instant::now();
    for i in 0..names {
        acme(
            &token,
            &ca,
            "issue",
            &[
                "--common-name",
                &format!("n{i}.fleet.example.test"),
                "--key-type",
                "ec-p256",
                "--http-01",
                &responder,
            ],
        )
        .ok();
    }
    let issued_in = started.elapsed();

    // Renewal runs on the real clock, as a timer would run them, until
    // every name was renewed twice.
    let mut renewed: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_run = Vec::new();
    let mut peak_pairs = 0;
    let mut lone_seen = 0;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(life * 4 + 300);
    while renewed.len() < names || renewed.values().any(|n| *n < 2) {
        assert!(
            Instant::now() < deadline,
            "renewed only {renewed:?} of {names} names"
        );
        // Once, SIGKILL a run in the middle of its renewals.
        if !killed && renewed.len() > names / 4 {
            let mut run = token.hsm_csr();
            run.args(["acme", "renew"])
                .args(token.token_flags())
                .args(super::acme_flags(&token, &ca))
                .args(["--http-01", &responder, "--jobs", "4"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let mut child = run.spawn().unwrap();
            let orders_before = ca.requests().len();
            let until = Instant::now() + Duration::from_secs(30);
            // Killed once the CA has seen its first order.
            while ca.requests().len() < orders_before + 3 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            killed = true;
            continue;
        }
        let run = acme(
            &token,
            &ca,
            "renew",
            &["--http-01", &responder, "--jobs", "4"],
        );
        assert!(run.code == 0 || run.code == 10, "{}", run.stderr);
        let report = run.json();
        assert_eq!(report["Failed"], serde_json::json!([]), "{report}");
        let done = report["Renewed"].as_array().unwrap();
        for r in done {
            *renewed
                .entry(r["CommonName"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        per_run.push(done.len());
        // Every whole pair has its certificate: the run after the killed
        // one swept what that left marked.
        let now_held = held(&token);
        assert!(
            now_held.without_certificate.is_empty(),
            "pairs without a certificate: {:?}",
            now_held.without_certificate
        );
        lone_seen = lone_seen.max(now_held.lone.len());
        peak_pairs = peak_pairs.max(now_held.per_label.values().copied().max().unwrap_or(0));
        // No name's newest certificate has ended.
        let status = token
            .run(
                &["acme", "status"],
                &[
                    "--account",
                    super::account(&token, &ca).to_str().unwrap(),
                    "--label-prefix",
                    &token.prefix,
                    "--format",
                    "json",
                ],
            )
            .ok()
            .json();
        let at = now();
        for s in status.as_array().unwrap() {
            assert!(unix(s["NotAfter"].as_str().unwrap()) > at, "expired: {s}");
        }
        assert_eq!(status.as_array().unwrap().len(), names);
        // Retire what was replaced (a grace period of 0 days: at once),
        // and any lone half, as the timer's prune does.
        token
            .run(
                &["keys", "prune"],
                &["--replaced-after", "0", "--orphans", "--yes"],
            )
            .ok();
        let pruned = held(&token);
        // What `--orphans` leaves by design (docs/tenancy.md): a delivered
        // private key whose public half a crash tore, here the SIGKILLed
        // run's rewrite of a replaced key's public object; its caller may
        // hold its CSR. At most the one the kill can tear, and only after it.
        let (kept, removable): (Vec<&Value>, Vec<&Value>) =
            pruned.lone.iter().partition(|k| {
                k["HasPrivateKey"] == true
                    && k["HasPublicKey"] != true
                    && k["Id"].as_str().is_some_and(|id| id.len() == 32)
            });
        assert!(removable.is_empty(), "lone after keys prune: {removable:?}");
        assert!(
            kept.is_empty() || (killed && kept.len() == 1),
            "private keys without their public half: {kept:?}"
        );
        assert!(
            pruned.per_label.values().all(|n| *n <= 2),
            "{:?}",
            pruned.per_label
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let total: usize = renewed.values().sum();
    let most = per_run.iter().copied().max().unwrap_or(0);
    assert!(
        most as f64 <= names as f64 * MOST_IN_ONE_RUN,
        "{most} of {names} renewed in one run: {per_run:?}"
    );
    // Each renewal's first order named the certificate it replaces
    // (acme2certifier does not echo it, so each is ordered again without).
    let orders: Vec<Value> = ca
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/acme/neworders")
        .collect();
    let replacing = orders
        .iter()
        .filter(|o| o["payload"].get("replaces").is_some())
        .count();
    assert!(
        replacing >= total,
        "{replacing} orders with replaces for {total} renewals"
    );
    let end = held(&token);
    assert!(end.without_certificate.is_empty());
    assert_eq!(end.per_label.len(), names);
    eprintln!(
        "fleet: {names} names issued in {:.0} s; {total} renewals in {} runs over {:.0} s \
         (most in one run {most}, {:.0}% of the fleet); peak {peak_pairs} pairs per name before \
         pruning; {} requests to the CA ({} new orders); a run killed mid-renewal left no pair \
         without a certificate ({lone_seen} lone half until keys prune --orphans)",
        issued_in.as_secs_f64(),
        per_run.len(),
        started.elapsed().as_secs_f64() - issued_in.as_secs_f64(),
        most as f64 * 100.0 / names as f64,
        ca.requests().len(),
        orders.len(),
    );
}
