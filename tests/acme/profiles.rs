//! Certificate profiles (draft-ietf-acme-profiles) against acme2certifier,
//! which offers them in its directory, refuses unknown ones and issues
//! each with its own lifetime (tests/tools/a2c_ca_handler.py); and against
//! pebble 2.4, which offers none.

use super::{account, acme, blocking, http_01, http_01_anywhere, objects};
use crate::common::Token;
use crate::common::a2c::{A2cOptions, Acme2Certifier};

/// notBefore and notAfter of the PEM chain's leaf, seconds since the epoch.
fn validity(pem: &str) -> (u64, u64) {
    let dates = crate::common::openssl(
        &["x509", "-noout", "-dates", "-dateopt", "iso_8601"],
        pem.as_bytes(),
    );
    let text = String::from_utf8(dates).unwrap();
    let at = |key: &str| {
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        let out = std::process::Command::new("date")
            .args(["-u", "+%s", "-d", &line[key.len()..]])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    (at("notBefore="), at("notAfter="))
}

/// What `<account>.names.json` keeps of key label `label` (its key is
/// the token's label, serial and the key label, tab-separated).
fn kept_for<'a>(kept: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    kept.as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with(&format!("\t{label}")))
        .map_or(&serde_json::Value::Null, |(_, v)| v)
}

/// The `profile` of each new order the CA received, in order.
fn ordered_profiles(ca: &Acme2Certifier) -> Vec<Option<String>> {
    ca.requests()
        .into_iter()
        .filter(|r| r["path"] == "/acme/neworders")
        .map(|r| r["payload"]["profile"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_profile_is_checked_before_keygen_sent_and_kept_for_renewal() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = Acme2Certifier::start(&A2cOptions {
        profiles: &[("classic", "6h"), ("shortlived", "2h")],
        ..A2cOptions::default()
    });
    let responder = http_01_anywhere();

    // Not offered: refused with what is, before any key or order.
    let run = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "p.example.test",
            "--http-01",
            &responder,
            "--profile",
            "tlsserver",
        ],
    );
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("Config.Invalid"), "{}", run.stderr);
    for offered in ["classic (6h certificates)", "shortlived (2h certificates)"] {
        assert!(run.stderr.contains(offered), "{}", run.stderr);
    }
    assert_eq!(objects(&token), (0, 0));
    assert!(ordered_profiles(&ca).is_empty());
    // Not a profile name at all: refused by the flag's parser.
    let run = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "p.example.test",
            "--http-01",
            &responder,
            "--profile",
            "a b",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);

    // Offered: sent, and the CA's lifetime for it is what is issued.
    let chain = token.dir().join("short.pem");
    let first = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "p.example.test",
            "--http-01",
            &responder,
            "--profile",
            "shortlived",
            "--chain-out",
            chain.to_str().unwrap(),
        ],
    )
    .ok()
    .json();
    let (not_before, not_after) = validity(&std::fs::read_to_string(&chain).unwrap());
    assert!(
        (not_after - not_before).abs_diff(7200) <= 120,
        "{not_before}..{not_after}"
    );
    assert_eq!(ordered_profiles(&ca), [Some("shortlived".to_owned())]);
    let kept_file = format!("{}.names.json", account(&token, &ca).display());
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&kept_file).unwrap()).unwrap();
    assert_eq!(
        kept_for(&kept, &format!("{}p.example.test", token.prefix))["Profile"],
        "shortlived",
        "{kept}"
    );

    // Renewed with the profile it was issued with.
    let late = (not_after - 60).to_string();
    let chains = tempfile::tempdir().unwrap();
    let renew = |extra: &[&str]| {
        let mut args = vec!["--http-01", &responder, "--now", &late];
        args.extend_from_slice(extra);
        acme(&token, &ca, "renew", &args)
    };
    let run = renew(&["--chain-dir", chains.path().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.json()["Renewed"][0]["Replaces"]["KeyUri"],
        first["KeyUri"]
    );
    let profiles = ordered_profiles(&ca);
    assert!(
        profiles[1..]
            .iter()
            .all(|p| p.as_deref() == Some("shortlived")),
        "{profiles:?}"
    );
    let renewed = std::fs::read_to_string(chains.path().join("p.example.test.pem")).unwrap();
    let (b, a) = validity(&renewed);
    assert!((a - b).abs_diff(7200) <= 120, "{b}..{a}");
    assert_eq!(objects(&token), (2, 2));

    // --profile and --key-type on renew: a fleet moved to another profile
    // and to P-256, and the new profile kept.
    let later = (a - 60).to_string();
    let run = acme(
        &token,
        &ca,
        "renew",
        &[
            "--http-01",
            &responder,
            "--now",
            &later,
            "--profile",
            "classic",
            "--key-type",
            "ec-p256",
            "--chain-dir",
            chains.path().to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let profiles = ordered_profiles(&ca);
    assert_eq!(
        profiles.last().unwrap().as_deref(),
        Some("classic"),
        "{profiles:?}"
    );
    let moved = std::fs::read_to_string(chains.path().join("p.example.test.pem")).unwrap();
    let (b, a) = validity(&moved);
    assert!((a - b).abs_diff(6 * 3600) <= 120, "{b}..{a}");
    let text = crate::common::openssl(&["x509", "-noout", "-text"], moved.as_bytes());
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("prime256v1"), "{text}");
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&kept_file).unwrap()).unwrap();
    assert_eq!(
        kept_for(&kept, &format!("{}p.example.test", token.prefix))["Profile"],
        "classic",
        "{kept}"
    );
    assert_eq!(objects(&token), (3, 3));
}

#[test]
fn a_profile_from_a_ca_that_offers_none_is_refused_before_keygen() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = blocking();
    let run = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "p.example.test",
            "--http-01",
            &http_01(&ca),
            "--profile",
            "shortlived",
        ],
    );
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("offers no profiles"), "{}", run.stderr);
    assert_eq!(objects(&token), (0, 0));
}
