//! `acme renew`: a short-lived certificate renewed once, with a new key of
//! the old key's type, the old pair kept; and a failed renewal that keeps
//! the old pair and adds none.

use super::{acme, check_chain, http_01, lasting, objects};
use crate::common::Token;
use crate::common::pebble::Pebble;
use crate::common::ports::free_port;

#[test]
fn a_short_lived_certificate_is_renewed_with_a_new_key_once() {
    let Some(token) = Token::private_softhsm("pebble issues to its keys") else {
        return;
    };
    // An hour-long certificate from one CA ...
    let short = lasting(3600);
    let first = acme(
        &token,
        &short,
        "issue",
        &[
            "--common-name",
            "renew.example.test",
            "--key-type",
            "ec-p384",
            "--http-01",
            &http_01(&short),
        ],
    )
    .ok()
    .json();
    drop(short);
    // ... renewed by another, whose certificates last years.
    let ca = Pebble::start();
    let not_due = acme(
        &token,
        &ca,
        "renew",
        &["--days", "0", "--http-01", &http_01(&ca)],
    );
    assert_eq!(
        not_due.code, 10,
        "nothing expires today: {}",
        not_due.stderr
    );
    assert_eq!(not_due.json()["Renewed"].as_array().unwrap().len(), 0);

    let chains = token.dir().join("chains");
    std::fs::create_dir(&chains).unwrap();
    let run = acme(
        &token,
        &ca,
        "renew",
        &[
            "--days",
            "1",
            "--http-01",
            &http_01(&ca),
            "--chain-dir",
            chains.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    let renewed = report["Renewed"].as_array().unwrap();
    assert_eq!(renewed.len(), 1, "{report}");
    let new = &renewed[0];
    assert_eq!(new["CommonName"], "renew.example.test");
    assert_eq!(new["Replaces"]["KeyUri"], first["KeyUri"]);
    assert_eq!(new["Replaces"]["PubMd5"], first["PubMd5"]);
    assert_ne!(
        new["PubMd5"], first["PubMd5"],
        "a new key pair, never the old one"
    );
    let chain = chains.join("renew.example.test.pem");
    assert_eq!(new["ChainPath"], chain.to_str().unwrap());
    let text = check_chain(&ca, &chain, new["PubMd5"].as_str().unwrap());
    assert!(
        text.contains("NIST CURVE: P-384"),
        "the old key's type: {text}"
    );
    assert_eq!(objects(&token), (2, 2), "the old pair and certificate stay");

    // Idempotent: the newest certificate of the name is not due.
    let again = acme(
        &token,
        &ca,
        "renew",
        &["--days", "1", "--http-01", &http_01(&ca)],
    );
    assert_eq!(again.code, 10, "{}", again.stderr);
    assert_eq!(again.json()["NotDue"], 1);
    assert_eq!(objects(&token), (2, 2));
}

#[test]
fn a_failed_renewal_keeps_the_old_pair_and_adds_none() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = lasting(3600);
    let first = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "keep.example.test",
            "--http-01",
            &http_01(&ca),
        ],
    )
    .ok()
    .json();
    // Renewed by another CA: pebble reuses the account's valid
    // authorization for the name when `rand.Intn(100) > PEBBLE_AUTHZREUSE`
    // is false, so even at 0 one order in a hundred skips validation (CI saw
    // this renewal succeed once).
    drop(ca);
    let ca = Pebble::start();
    // The challenge is served where pebble does not look.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let run = acme(
        &token,
        &ca,
        "renew",
        &["--days", "1", "--http-01", &elsewhere],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.json();
    let failed = report["Failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["Code"], "Acme.ChallengeFailed");
    assert_eq!(failed[0]["Replaces"]["KeyUri"], first["KeyUri"]);
    assert_eq!(report["Renewed"].as_array().unwrap().len(), 0);
    assert_eq!(objects(&token), (1, 1), "the old pair stays, no new one");
}

#[test]
fn without_days_a_certificate_is_renewed_once_a_third_of_its_life_is_left() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = lasting(3600);
    let name = ["--common-name", "third.example.test"];
    let first = acme(
        &token,
        &ca,
        "issue",
        &[name[0], name[1], "--http-01", &http_01(&ca)],
    )
    .ok()
    .json();
    let not_after = super::unix(first["NotAfter"].as_str().unwrap());
    let renew = |now: Option<u64>| {
        let mut args = vec!["--http-01".to_owned(), http_01(&ca)];
        if let Some(now) = now {
            args.extend(["--now".to_owned(), now.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        acme(&token, &ca, "renew", &args)
    };
    // A fresh hour-long certificate is not due: a fixed 30 days would be.
    let fresh = renew(None);
    assert_eq!(fresh.code, 10, "{}", fresh.stderr);
    let report = fresh.json();
    assert_eq!(report["NotDue"], 1, "{report}");
    let at = super::unix(report["NextRenewal"].as_str().unwrap());
    assert!(
        at <= not_after - 1200 && at >= not_after - 1800 - 60,
        "a third of the hour left at the latest, a half at the earliest: {report} ends {not_after}"
    );
    let before = renew(Some(at - 1));
    assert_eq!(before.code, 10, "{}", before.stderr);
    assert_eq!(objects(&token), (1, 1));
    let due = renew(Some(at));
    assert_eq!(due.code, 0, "{}", due.stderr);
    let report = due.json();
    assert_eq!(report["Renewed"][0]["Replaces"]["KeyUri"], first["KeyUri"]);
    // The new certificate is the newest of the name, and fresh.
    let again = renew(None);
    assert_eq!(again.code, 10, "{}", again.stderr);
    assert_eq!(objects(&token), (2, 2));
}
