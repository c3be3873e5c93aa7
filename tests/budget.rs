//! The round-trip budget: on a network HSM every PKCS#11 call
//! is a round trip, so the calls a CSR makes are counted, through OpenSC's
//! pkcs11-spy, on three paths (serve on demand, serve from the pool,
//! create), and held to a budget. Runs on a private
//! SoftHSM2 token and on the shared tokens of `scripts/test.sh` (the
//! p11-kit path among them).
//!
//! What each path needs, and no more:
//!
//! - **on demand** (7): C_GenerateKeyPair with the public key's final
//!   CKA_ID and label and the private key's mark in its template; one read
//!   of the private key's CKA_SENSITIVE, CKA_EXTRACTABLE and CKA_TOKEN (a
//!   token that ignored them must not get its key used); the public key
//!   (two calls: cryptoki asks for a variable-length attribute's length
//!   first); C_SignInit and one C_Sign into a buffer sized from the key;
//!   one C_SetAttributeValue giving the private key its final CKA_ID and
//!   label at delivery.
//! - **pooled** (5): one C_SetAttributeValue putting this process's mark on
//!   the private key (the claim), C_SignInit, C_Sign, and the delivery: one
//!   C_SetAttributeValue per object. The public key was read when the pool
//!   was filled. The pool's refill runs on a session of its own and is
//!   counted apart.
//! - **`create`**, initialise to finalise (16 PKCS#11 operations, 19 calls
//!   on SoftHSM2): C_Initialize, C_GetSlotList, C_GetTokenInfo per slot
//!   with a token (SoftHSM2 always adds an empty one: 2), C_OpenSession,
//!   C_Login, C_GetMechanismList (what the token cannot sign with is
//!   refused before a key exists), the on-demand calls above, one read of
//!   the new CKA_ID's length (the first change of a CKA_ID on a connection
//!   is read back: a token that answers CKR_OK and keeps the old one would
//!   leave a delivered key marked undelivered, for a sweep to destroy),
//!   C_CloseSession and C_Finalize. Three of these are two calls each in
//!   cryptoki 0.12 (C_GetSlotList, C_GetMechanismList and the public key's
//!   C_GetAttributeValue ask for the length first), hence 16 operations and
//!   19 calls. The sweep for keys an interrupted run left costs three more
//!   calls, made only when such a run left its note (src/cli/in_flight.rs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::rpc;
use crate::common::server::{Launch, Server, metric, wait_for};
use crate::common::spy::{self, Call, SPY};
use crate::common::{Run, Token, interrupted_create, notes_dir, skip};

/// CSRs per path.
const N: usize = 4;
const ON_DEMAND: usize = 7;
const POOLED: usize = 5;
/// `create`'s PKCS#11 operations on a token with one slot (SoftHSM2, with
/// its empty second slot, makes one C_GetTokenInfo more: 16).
const CREATE_ONE_SLOT: usize = 15;
/// Operations cryptoki makes in two calls, asking for a length first:
/// C_GetSlotList, C_GetMechanismList, the public key's C_GetAttributeValue.
const TWO_PASS: usize = 3;

/// A token with pkcs11-spy in front of it: its environment and log.
struct Spied {
    token: Token,
    log: PathBuf,
    module: String,
}

impl Spied {
    fn new() -> Option<Spied> {
        Spied::on(Token::new())
    }

    /// On a private SoftHSM2 token only.
    fn private(why: &str) -> Option<Spied> {
        Spied::on(Token::private_softhsm(why)?)
    }

    fn on(token: Token) -> Option<Spied> {
        if !Path::new(SPY).exists() {
            skip(
                &token,
                "pkcs11-spy is not installed (Debian's opensc-pkcs11)",
            );
            return None;
        }
        let log = token.dir().join("spy.log");
        let module = token.module.clone();
        Some(Spied { token, log, module })
    }

    /// EC P-256, or RSA-2048 on a token without EC (openCryptoki): the
    /// calls are the same.
    fn key_type(&self) -> &'static str {
        if self.token.lacks("ec-p256") {
            "rsa-2048"
        } else {
            "ec-p256"
        }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("PKCS11SPY", self.module.as_str()),
            ("PKCS11SPY_OUTPUT", self.log.to_str().unwrap()),
        ]
    }

    fn len(&self) -> usize {
        std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    fn between(&self, from: usize, to: usize) -> Vec<Call> {
        let log = std::fs::read(&self.log).unwrap_or_default();
        spy::calls(&String::from_utf8_lossy(
            &log[from.min(log.len())..to.min(log.len())],
        ))
    }

    /// Waits until the log has not grown for half a second (up to 60 s):
    /// the start's pass over the token's keys, a refill, are done.
    fn quiet(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = self.len();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.len();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

/// One request's calls: those on the session that signed and those on no
/// session (mechanism lists, token info), and apart, those on other
/// sessions (the pool's refill, the sweeper).
fn split(calls: Vec<Call>) -> (Vec<Call>, Vec<Call>) {
    let mut signers: Vec<String> = calls
        .iter()
        .filter(|c| c.name == "C_Sign")
        .filter_map(|c| c.session.clone())
        .collect();
    signers.dedup();
    assert_eq!(signers.len(), 1, "one signing session per CSR: {calls:?}");
    calls
        .into_iter()
        .partition(|c| c.session.is_none() || c.session.as_ref() == Some(&signers[0]))
}

/// `N` CSRs through `serve` with one worker, one at a time; each one's
/// calls, and the other sessions' calls over the same time.
fn serve_calls(spied: &Spied, top: &str, pooled: bool) -> Vec<(Vec<Call>, Vec<Call>)> {
    let server = Server::launch_on(
        &spied.token,
        &Server::config(&spied.token, spied.key_type(), "workers = 1")
            .module(SPY)
            .extra(top),
        &Launch {
            env: &spied.env(),
            ..Launch::default()
        },
    );
    if pooled {
        wait_for(&server, "hsm_csr_pool_depth", N as f64);
    }
    let mut per_csr = Vec::new();
    for i in 0..N {
        let before = spied.quiet();
        let answer = rpc::get(
            &server.addr,
            &rpc::signed_query(
                "MainKey",
                "s3cret",
                &[("CommonName", &format!("budget{i}.example.com"))],
            ),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let after = spied.len();
        // A refill started by this CSR is counted with it, apart.
        let settled = spied.quiet();
        let (mine, _) = split(spied.between(before, after));
        let (_, others) = split(spied.between(before, settled));
        per_csr.push((mine, others));
    }
    if pooled {
        assert_eq!(
            metric(&server, "hsm_csr_pool_hits_total"),
            Some(N as f64),
            "every CSR came from the pool"
        );
    }
    server.stop();
    per_csr
}

/// Asserts each CSR's calls but the first (which reads what its
/// connection learns once) are within `budget`; prints them.
fn within(path: &str, per_csr: &[(Vec<Call>, Vec<Call>)], budget: usize) {
    for (i, (mine, others)) in per_csr.iter().enumerate().skip(1) {
        eprintln!(
            "{path} CSR {i}: {} token calls ({}); other sessions meanwhile: {} ({})",
            mine.len(),
            spy::tally(mine),
            others.len(),
            spy::tally(others)
        );
        assert!(
            mine.len() <= budget,
            "{path} CSR {i}: {} calls, budget {budget}: {}",
            mine.len(),
            spy::tally(mine)
        );
    }
}

#[test]
fn an_on_demand_csr_makes_at_most_7_token_calls() {
    let Some(spied) = Spied::new() else {
        return;
    };
    let per_csr = serve_calls(&spied, "", false);
    within("on demand", &per_csr, ON_DEMAND);
    for (mine, _) in &per_csr[1..] {
        let names: Vec<&str> = mine.iter().map(|c| c.name.as_str()).collect();
        for once in [
            "C_GetMechanismList",
            "C_GetMechanismInfo",
            "C_GenerateRandom",
            "C_GetTokenInfo",
        ] {
            assert!(!names.contains(&once), "{once} again: {names:?}");
        }
        assert_eq!(
            names.iter().filter(|n| **n == "C_Sign").count(),
            1,
            "{names:?}"
        );
    }
    // Read once per connection, whatever the number of sessions: the list
    // is one operation, two calls.
    let lists = spied
        .between(0, spied.len())
        .iter()
        .filter(|c| c.name == "C_GetMechanismList")
        .count();
    assert_eq!(lists, 2, "C_GetMechanismList calls over the whole run");
}

#[test]
fn a_pooled_csr_makes_at_most_5_token_calls() {
    let Some(spied) = Spied::new() else {
        return;
    };
    let top = format!("[pool]\nsize = {}\n", N + 1);
    let per_csr = serve_calls(&spied, &top, true);
    within("pooled", &per_csr, POOLED);
    for (mine, _) in &per_csr[1..] {
        assert!(
            !mine.iter().any(|c| c.name == "C_GenerateKeyPair"),
            "a pooled CSR makes no key: {mine:?}"
        );
    }
    // The refill ran on a session of its own. When is not asserted: a
    // slow keygen (RSA on openCryptoki) may land in the next CSR's window.
    assert!(
        per_csr
            .iter()
            .any(|(_, others)| others.iter().any(|c| c.name == "C_GenerateKeyPair")),
        "the refill made its keys on a session of its own"
    );
}

/// `create` through the spy, with `state` as XDG_STATE_HOME; its calls.
fn create_calls(spied: &Spied, key_type: &str, name: &str, state: &Path) -> Vec<Call> {
    let key_type = key_type.strip_suffix("-2048").unwrap_or(key_type);
    let from = spied.len();
    let mut cmd = spied.token.hsm_csr();
    let module_flags: Vec<String> = spied
        .token
        .token_flags()
        .into_iter()
        .map(|f| if f == spied.module { SPY.to_owned() } else { f })
        .collect();
    cmd.envs(spied.env())
        .env("XDG_STATE_HOME", state)
        .arg("create")
        .args(&module_flags)
        .args(["--label-prefix", &spied.token.prefix])
        .args(["--common-name", name])
        .args(["--key-type", key_type]);
    Run::of(&mut cmd).ok();
    spied.between(from, spied.len())
}

fn sweeps(calls: &[Call]) -> bool {
    calls.iter().any(|c| c.name == "C_FindObjectsInit")
}

#[test]
fn create_makes_at_most_16_operations_initialise_to_finalise() {
    let Some(spied) = Spied::new() else {
        return;
    };
    let state = spied.token.dir().join("state");
    for key_type in ["ec-p256", "rsa"] {
        if spied.token.lacks(key_type) {
            continue;
        }
        let calls = create_calls(&spied, key_type, &format!("{key_type}.example.com"), &state);
        let slots = calls.iter().filter(|c| c.name == "C_GetTokenInfo").count();
        eprintln!(
            "create {key_type}: {} token calls ({}), {slots} slot(s) with a token",
            calls.len(),
            spy::tally(&calls)
        );
        // One C_GetTokenInfo per slot with a token.
        let budget = CREATE_ONE_SLOT + (slots - 1) + TWO_PASS;
        assert!(
            calls.len() <= budget,
            "create {key_type}: {} calls, budget {budget}: {}",
            calls.len(),
            spy::tally(&calls)
        );
        assert!(
            !sweeps(&calls),
            "no earlier run was interrupted, so no sweep: {}",
            spy::tally(&calls)
        );
    }
}

#[test]
fn create_sweeps_after_an_interrupted_run_or_when_it_cannot_keep_notes() {
    let Some(spied) =
        Spied::private("the command line's in-flight notes do not depend on the token")
    else {
        return;
    };
    let state = spied.token.dir().join("state");
    let first = create_calls(&spied, spied.key_type(), "first.example.com", &state);
    assert!(!sweeps(&first), "{}", spy::tally(&first));
    let notes = notes_dir(&spied.token);
    assert_eq!(
        std::fs::read_dir(&notes).unwrap().count(),
        0,
        "a run that ended well leaves no note"
    );
    // Killed before it was done: its note stays, and the next run sweeps
    // and removes it.
    interrupted_create(&spied.token);
    assert_eq!(std::fs::read_dir(&notes).unwrap().count(), 1);
    let after = create_calls(&spied, spied.key_type(), "after.example.com", &state);
    assert!(sweeps(&after), "{}", spy::tally(&after));
    assert_eq!(std::fs::read_dir(&notes).unwrap().count(), 0);
    let again = create_calls(&spied, spied.key_type(), "again.example.com", &state);
    assert!(!sweeps(&again), "{}", spy::tally(&again));
    // Notes that cannot be kept: every run sweeps.
    let unusable = spied.token.dir().join("not-a-directory");
    std::fs::write(&unusable, "").unwrap();
    for name in ["u1.example.com", "u2.example.com"] {
        let calls = create_calls(&spied, spied.key_type(), name, &unusable);
        assert!(sweeps(&calls), "{}", spy::tally(&calls));
    }
}
