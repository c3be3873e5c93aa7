//! Pool keys are told apart by something no caller can produce.
//!
//! A pool key's CKA_ID is `hsm-pool` followed by 16 random bytes on both
//! objects; a request claims it by giving both a fresh 16-byte CKA_ID
//! before relabelling it. Whatever label a caller manages to give a key,
//! a restart must not adopt it into the pool.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::common::server::{Server, call, metric, wait_for};
use crate::common::{PIN, Token, python, repo};

const POOL: &str = "[pool]\nsize = 4\n";
/// `hsm-pool` in hex: how a pool key's CKA_ID starts.
const POOL_ID_HEX: &str = "68736d2d706f6f6c";

fn is_pool_id(hex: &str) -> bool {
    hex.len() == 2 * 24 && hex.starts_with(POOL_ID_HEX)
}

/// One call per common name, in order; their PubMd5 values.
fn call_names(server: &Server, names: &[&str]) -> Vec<String> {
    let out = Command::new(python())
        .arg(repo().join("tests/tools/call.py"))
        .arg(&server.addr)
        .arg(names.len().to_string())
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks that every key object on the token is one half of a pair (one
/// private and one public object with the same CKA_ID and label), and
/// returns the PubMd5 values of the delivered keys (16-byte CKA_ID) and
/// the number of waiting pool keys (pool CKA_ID, unassigned label).
fn delivered_and_waiting(token: &Token) -> (BTreeSet<String>, usize) {
    let objects = token.keys();
    let entries = token.listed();
    assert_eq!(
        objects.len(),
        2 * entries.len(),
        "{objects:#?}\n{entries:#?}"
    );
    let unassigned = format!("{}pool:unassigned", token.prefix);
    let (mut delivered, mut waiting) = (BTreeSet::new(), 0);
    for e in &entries {
        let id = e["Id"].as_str().unwrap();
        let halves: Vec<&Value> = objects.iter().filter(|o| o["id"] == id).collect();
        assert_eq!(halves.len(), 2, "{id}: {halves:?}");
        assert!(
            halves.iter().all(|o| o["label"] == e["Label"]),
            "{halves:?}"
        );
        assert!(e["HasPrivateKey"].as_bool().unwrap(), "{e}");
        if is_pool_id(id) {
            assert_eq!(e["Label"], unassigned.as_str(), "{e}");
            waiting += 1;
        } else {
            assert_eq!(id.len(), 32, "a delivered key has a 16-byte CKA_ID: {e}");
            assert!(delivered.insert(e["PubMd5"].as_str().unwrap().to_owned()));
        }
    }
    (delivered, waiting)
}

fn adopted(log: &str) -> usize {
    let line = log
        .lines()
        .find(|l| l.contains("unassigned key(s) adopted"))
        .unwrap_or_else(|| panic!("no adoption line:\n{log}"));
    line.split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

fn assert_disjoint(old: &[String], new: &[String]) {
    let old: BTreeSet<&String> = old.iter().collect();
    let distinct: BTreeSet<&String> = new.iter().collect();
    assert_eq!(
        distinct.len(),
        new.len(),
        "a key was handed out twice: {new:?}"
    );
    let again: Vec<&&String> = distinct.intersection(&old).collect();
    assert!(
        again.is_empty(),
        "handed out a key that was already delivered: {again:?}"
    );
}

#[test]
fn a_common_name_that_spells_the_pool_label_never_puts_a_key_back_in_the_pool() {
    let token = Token::new();
    let server = Server::start_with(&token, token.ec_or_rsa(), "", POOL);
    wait_for(&server, "hsm_csr_pool_depth", 4.0);
    let repeated = format!("{}pool:unassigned", token.prefix);
    let names = [
        "pool:unassigned",
        " pool:unassigned ",
        "POOL:UNASSIGNED",
        repeated.as_str(),
        // Cyrillic a; fullwidth colon.
        "pool:un\u{430}ssigned",
        "pool\u{ff1a}unassigned",
    ];
    let first = call_names(&server, &names);
    wait_for(&server, "hsm_csr_pool_depth", 4.0);
    server.stop();

    // After a restart, more calls than the pool could possibly hold.
    let server = Server::start_with(&token, token.ec_or_rsa(), "", POOL);
    let second = call(&server, 8);
    let log = server.stop();
    assert_eq!(adopted(&log), 4, "{log}");
    assert_disjoint(&first, &second);
    // Two of the first keys carry exactly the pool's label, yet they are
    // delivered keys with ordinary CKA_IDs.
    assert!(
        log.contains("2 key pair(s) labelled") && log.contains("were not adopted"),
        "{log}"
    );
    let unassigned = format!("{}pool:unassigned", token.prefix);
    let lookalikes = token
        .listed()
        .iter()
        .filter(|k| k["Label"] == unassigned.as_str() && !is_pool_id(k["Id"].as_str().unwrap()))
        .count();
    assert_eq!(lookalikes, 2);

    // The token holds the 14 delivered keys and the pool's waiting keys.
    let (delivered, _) = delivered_and_waiting(&token);
    let all: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(delivered, all);
}

#[test]
fn keys_made_by_create_under_the_pool_label_are_never_adopted() {
    let token = Token::new();
    let prefix = token.prefix.clone();
    let pool_prefix = format!("{prefix}pool:");
    let made: Vec<String> = [
        (prefix.as_str(), "pool:unassigned"),
        (pool_prefix.as_str(), "unassigned"),
    ]
    .iter()
    .map(|(label_prefix, cn)| {
        let run = token
            .run(
                &["create"],
                &[
                    "--label-prefix",
                    label_prefix,
                    "--common-name",
                    cn,
                    "--key-type",
                    // create's flag says "rsa" (2048 bits by default).
                    token.ec_or_rsa().trim_end_matches("-2048"),
                ],
            )
            .ok();
        run.json()["PubMd5"].as_str().unwrap().to_owned()
    })
    .collect();
    let unassigned = format!("{prefix}pool:unassigned");
    let labelled = token
        .keys()
        .iter()
        .filter(|k| k["label"] == unassigned.as_str())
        .count();
    assert_eq!(labelled, 4, "both pairs carry the pool's label");

    let server = Server::start_with(&token, token.ec_or_rsa(), "", POOL);
    wait_for(&server, "hsm_csr_pool_depth", 4.0);
    let served = call(&server, 6);
    let log = server.stop();
    assert_eq!(adopted(&log), 0, "{log}");
    assert!(log.contains("2 key pair(s) labelled"), "{log}");
    assert_disjoint(&made, &served);
    let (delivered, _) = delivered_and_waiting(&token);
    let all: BTreeSet<String> = made.iter().chain(&served).cloned().collect();
    assert_eq!(delivered, all);
}

#[test]
fn a_pool_key_whose_claim_was_cut_off_is_not_adopted() {
    let token = Token::new();
    let server = Server::start_with(&token, token.ec_or_rsa(), "", POOL);
    wait_for(&server, "hsm_csr_pool_depth", 4.0);
    server.stop();
    let unassigned = format!("{}pool:unassigned", token.prefix);
    let pool_ids: Vec<String> = token
        .listed()
        .iter()
        .filter(|k| k["Label"] == unassigned.as_str())
        .map(|k| k["Id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pool_ids.len(), 4, "{pool_ids:?}");

    // Claimed (both CKA_IDs ordinary) but not relabelled; only the private
    // half claimed; only the public half claimed. The fourth stays whole.
    let cut_off = [
        (&pool_ids[0], &["privkey", "pubkey"][..]),
        (&pool_ids[1], &["privkey"][..]),
        (&pool_ids[2], &["pubkey"][..]),
    ];
    for (n, (id, types)) in cut_off.iter().enumerate() {
        let fresh = format!("{:032x}", 0xc1a1_0000 + n);
        for t in *types {
            token.pkcs11_tool(&["--type", t, "--id", id, "--set-id", &fresh]);
        }
    }
    let objects = token.keys();
    for (id, types) in cut_off {
        let left = objects.iter().filter(|o| o["id"] == id.as_str()).count();
        assert_eq!(left, 2 - types.len(), "pkcs11-tool --set-id: {objects:#?}");
    }
    // Their public keys, as the listing reads them (an RSA private key
    // listed alone carries its PubMd5 too: one key, listed twice).
    let untouchable: Vec<String> = token
        .listed()
        .iter()
        .filter(|k| k["Id"] != pool_ids[3].as_str())
        .filter_map(|k| k["PubMd5"].as_str().map(str::to_owned))
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    assert_eq!(untouchable.len(), 3, "{untouchable:?}");

    let server = Server::start_with(&token, token.ec_or_rsa(), "", POOL);
    let served = call(&server, 5);
    let log = server.stop();
    assert_eq!(adopted(&log), 1, "{log}");
    assert_disjoint(&untouchable, &served);
    assert!(pool_ids.iter().all(|id| is_pool_id(id)), "{pool_ids:?}");
}

#[test]
fn a_token_that_refuses_the_claim_turns_the_pool_off_and_hands_out_nothing_unclaimed() {
    let Some(token) = Token::private_softhsm("plants an unmodifiable pool key with PyKCS11") else {
        return;
    };
    // A pool-shaped pair the token will not let anyone modify.
    let id = format!("{POOL_ID_HEX}{}", "5a".repeat(16));
    let out = Command::new(python())
        .arg(repo().join("tests/tools/p11poolkey.py"))
        .args([&token.module, &token.label, &id])
        .arg(format!("{}pool:unassigned", token.prefix))
        .env("HSM_CSR_PIN", PIN)
        .env("SOFTHSM2_CONF", token.conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stuck = token.listed()[0]["PubMd5"].as_str().unwrap().to_owned();

    let server = Server::start_with(&token, token.ec_or_rsa(), "", "[pool]\nsize = 2\n");
    // The adopted pair is first in line; the refiller adds one more.
    wait_for(&server, "hsm_csr_pool_depth", 2.0);
    let served = call(&server, 3);
    assert_eq!(metric(&server, "hsm_csr_pool_depth"), Some(0.0));
    assert_eq!(metric(&server, "hsm_csr_pool_hits_total"), Some(0.0));
    assert_eq!(metric(&server, "hsm_csr_pool_misses_total"), Some(3.0));
    let log = server.stop();
    assert_eq!(adopted(&log), 1, "{log}");
    assert!(log.contains("key pool turned off"), "{log}");
    // The log names the token's refusal.
    let refusal = "CKR_ACTION_PROHIBITED";
    assert!(log.contains(refusal), "{log}");
    assert!(!served.contains(&stuck), "{served:?}");
    // Both pool keys were destroyed; only the three delivered keys are left.
    let (delivered, waiting) = delivered_and_waiting(&token);
    assert_eq!(waiting, 0);
    assert_eq!(delivered, served.iter().cloned().collect());
}

#[test]
fn keys_planted_under_the_pool_mark_are_never_adopted() {
    // Whoever plants a pool-shaped key whose private half they know gets
    // it into the next caller's CSR, unless the pool adopts only keys made
    // on the token that never left it.
    let Some(token) = Token::private_softhsm("keys are planted with softhsm2-util and PyKCS11")
    else {
        return;
    };
    let unassigned = format!("{}pool:unassigned", token.prefix);
    let imported_id = format!("{POOL_ID_HEX}00112233445566778899aabbccddeeff");
    let extracted_id = format!("{POOL_ID_HEX}{}", "5a".repeat(16));

    // Made outside the token and imported (C_CreateObject): CKA_LOCAL FALSE.
    let p8 = token.dir().join("planted.p8");
    let made = token
        .openssl()
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-out"])
        .arg(&p8)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let imported = Command::new("softhsm2-util")
        .arg("--import")
        .arg(&p8)
        .args(["--token", &token.label, "--label", &unassigned])
        .args(["--id", &imported_id, "--pin", PIN])
        .env("SOFTHSM2_CONF", token.conf())
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");

    // Made on the token, read out, then locked: CKA_LOCAL TRUE, but
    // CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE FALSE.
    let extracted = Command::new(python())
        .arg(repo().join("tests/tools/p11extracted.py"))
        .args([&token.module, &token.label, &extracted_id, &unassigned])
        .env("HSM_CSR_PIN", PIN)
        .env("SOFTHSM2_CONF", token.conf())
        .output()
        .unwrap();
    assert!(
        extracted.status.success() && extracted.stdout == b"32\n",
        "{extracted:?}"
    );

    let before = token.listed();
    let planted: Vec<String> = before
        .iter()
        .map(|k| k["PubMd5"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(planted.len(), 2, "{before:#?}");
    assert!(before.iter().all(|k| k["Label"] == unassigned.as_str()));

    let server = Server::start_with(&token, token.ec_or_rsa(), "", "[pool]\nsize = 1\n");
    wait_for(&server, "hsm_csr_pool_depth", 1.0);
    let served = call(&server, 3);
    let log = server.stop();
    assert_eq!(adopted(&log), 0, "{log}");
    assert!(log.contains("2 key pair(s) labelled"), "{log}");
    // Each planted pair is named, with what gives it away.
    for (id, doubt) in [
        (&imported_id, "CKA_LOCAL=FALSE"),
        (&extracted_id, "CKA_NEVER_EXTRACTABLE=FALSE"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("CKA_ID {id} carries the pool's mark")))
            .unwrap_or_else(|| panic!("{id} not named:\n{log}"));
        assert!(line.contains(doubt), "{line}");
    }
    assert_disjoint(&planted, &served);
    // The planted pairs stay as they were, for the operator to look at.
    let left: Vec<String> = token
        .listed()
        .iter()
        .filter(|k| [&imported_id, &extracted_id].contains(&&k["Id"].as_str().unwrap().to_owned()))
        .map(|k| k["PubMd5"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, planted);
}

/// Runs [`session_child`] in a process of its own: the PKCS#11 module is
/// initialised once per process, with the token's SoftHSM configuration.
#[test]
fn a_session_forgets_the_keys_it_delivered() {
    let Some(token) = Token::private_softhsm("the child process opens a private token") else {
        return;
    };
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "pool::session_child", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env("HSM_CSR_POOL_CHILD_MODULE", &token.module)
        .env("HSM_CSR_POOL_CHILD_TOKEN", &token.label)
        .env("HSM_CSR_POOL_CHILD_PREFIX", &token.prefix)
        .env("SOFTHSM2_CONF", token.conf());
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 30 on-demand keys and 5 through the pool (3 of them pool keys).
    let entries = token.listed();
    assert_eq!(entries.len(), 35, "{entries:#?}");
    assert!(
        entries
            .iter()
            .all(|k| k["Id"].as_str().unwrap().len() == 32)
    );
}

#[test]
#[ignore = "run by a_session_forgets_the_keys_it_delivered in a process of its own"]
fn session_child() {
    use hsm_csr::backend::pkcs11::pool::{KeyPool, Pooled};
    use hsm_csr::backend::pkcs11::{Pkcs11Backend, TokenSelector};
    use hsm_csr::{CsrRequest, KeyOptions, KeyType, SubjectDefaults, issue_csr};

    let Ok(module) = std::env::var("HSM_CSR_POOL_CHILD_MODULE") else {
        return;
    };
    let label = std::env::var("HSM_CSR_POOL_CHILD_TOKEN").unwrap();
    let prefix = std::env::var("HSM_CSR_POOL_CHILD_PREFIX").unwrap();
    let mut backend =
        Pkcs11Backend::open(module.as_ref(), &TokenSelector::label(label.as_str())).unwrap();
    backend
        .login(Some(&cryptoki::types::AuthPin::from(PIN)))
        .unwrap();
    let options = KeyOptions {
        key_type: KeyType::EcP256,
        label_prefix: prefix.clone(),
        ..KeyOptions::default()
    }
    .validate()
    .unwrap();
    let request = |i: usize| {
        CsrRequest {
            common_name: Some(format!("s{i}.example")),
            ..CsrRequest::default()
        }
        .validate(&SubjectDefaults::default())
        .unwrap()
    };
    for i in 0..30 {
        issue_csr(&mut backend, &request(i), &options, format!("R{i}"), None).unwrap();
        assert_eq!(backend.tracked_pairs(), 0, "after CSR {i}");
    }

    let pool = KeyPool::new(3, KeyType::EcP256, format!("{prefix}pool:unassigned"));
    let mut refiller = backend.another_session().unwrap();
    for _ in 0..3 {
        pool.refill(&mut refiller, options.signature(), &|| true)
            .unwrap();
    }
    assert_eq!(refiller.tracked_pairs(), 0, "pool keys belong to the pool");
    for i in 30..35 {
        let mut pooled = Pooled {
            backend: &mut backend,
            pool: &pool,
        };
        let r = issue_csr(&mut pooled, &request(i), &options, format!("R{i}"), None).unwrap();
        let id: String = r
            .key_uri
            .split(';')
            .find_map(|p| p.strip_prefix("id="))
            .unwrap()
            .replace('%', "");
        assert_eq!(
            id.len(),
            32,
            "a claimed key has an ordinary CKA_ID: {}",
            r.key_uri
        );
        assert_eq!(backend.tracked_pairs(), 0, "after pooled CSR {i}");
    }
    assert_eq!(pool.stats().hits, 3);
}
