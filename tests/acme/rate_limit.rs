//! The CA's rate limit (RFC 8555 section 6.6, a 429 with `rateLimited`
//! and Retry-After): `renew` waits as asked and goes on, fails no name for
//! it, and past `--rate-limit-wait` leaves the rest to the next run with
//! nothing made on the token. acme2certifier has no rate limits; its test
//! server answers 429 where the test asks it to.

use std::time::{Duration, Instant};

use super::{acme, http_01_anywhere, objects, unix};
use crate::common::Token;
use crate::common::a2c::{A2cOptions, Acme2Certifier};

fn new_orders(ca: &Acme2Certifier) -> usize {
    ca.requests()
        .iter()
        .filter(|r| r["path"] == "/acme/neworders")
        .count()
}

#[test]
fn renew_waits_out_the_cas_rate_limit_and_leaves_the_rest_past_its_budget() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = Acme2Certifier::start(&A2cOptions::default());
    let responder = http_01_anywhere();
    let mut ends = Vec::new();
    for i in 0..3 {
        let issued = acme(
            &token,
            &ca,
            "issue",
            &[
                "--common-name",
                &format!("r{i}.example.test"),
                "--key-type",
                "ec-p256",
                "--http-01",
                &responder,
            ],
        )
        .ok()
        .json();
        ends.push(unix(issued["NotAfter"].as_str().unwrap()));
    }
    let renew = |now: u64, extra: &[&str]| {
        let now = now.to_string();
        let mut args = vec!["--http-01", &responder, "--now", &now];
        args.extend_from_slice(extra);
        acme(&token, &ca, "renew", &args)
    };

    // Two 429s asking for 2 s each: waited for, then every name renewed.
    ca.rate_limit(2, "2");
    let started = Instant::now();
    let run = renew(ends[0] - 60, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let report = run.json();
    assert_eq!(report["Renewed"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["Failed"], serde_json::json!([]), "{report}");
    assert_eq!(report["Deferred"], 0);
    assert_eq!(report["RateLimitWaitedS"], 4);
    assert_eq!(
        run.stderr.matches("waiting 2 s, as it asks").count(),
        2,
        "{}",
        run.stderr
    );
    // Each refused order's key pair was removed: three old, three new.
    assert_eq!(objects(&token), (6, 6));

    // A limit of an hour, past --rate-limit-wait: nothing ordered after
    // it, nothing failed, everything left for the next run, no key made.
    ca.rate_limit(100, "3600");
    let before = new_orders(&ca);
    let renewed_end = report["Renewed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| unix(r["NotAfter"].as_str().unwrap()))
        .min()
        .unwrap();
    let started = Instant::now();
    let run = renew(renewed_end - 60, &["--rate-limit-wait", "5"]);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("Acme.RateLimited"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("3 certificate(s) left for the next run"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["Renewed"], serde_json::json!([]), "{report}");
    assert_eq!(report["Failed"], serde_json::json!([]), "{report}");
    assert_eq!(report["Deferred"], 3, "{report}");
    assert_eq!(objects(&token), (6, 6));
    // One order was tried, and refused; none after it.
    assert_eq!(new_orders(&ca), before + 1);
}
