//! The sweep at start: `serve` SIGKILLed under load (EC and RSA-4096, mid
//! C_GenerateKeyPair) and restarted keeps only the delivered keys; a key
//! caught on the token before its delivery is gone after the restart; a
//! live process's marked key is kept, a dead one's removed, and a mark
//! planted over a delivered key's CKA_ID removes only the planted pair.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsm_csr::backend::pkcs11::id::{KIND_PROCESS, Owner};
use serde_json::Value;

use super::{Load, only_delivered_and_unassigned, pairs, plant, sigkill};
use crate::common::server::{Server, metric};
use crate::common::{Token, interrupted_create};

#[test]
fn serve_killed_under_load_leaves_only_the_delivered_keys_after_a_restart() {
    let token = Token::new();
    let (mut delivered, mut unanswered) = (Vec::new(), Vec::new());
    // Short EC calls: most of the time some key exists and is not
    // delivered yet. Four times, to make that all but certain.
    for _ in 0..4 {
        let server = Server::start(&token, token.ec_or_rsa(), "workers = 3\n");
        let load = Load::start(std::slice::from_ref(&server.addr), 3, usize::MAX);
        load.wait_for(8);
        sigkill(server.pid());
        let (answered, cut_off) = load.finish_with_unanswered();
        delivered.extend(answered);
        unanswered.extend(cut_off);
    }
    // Then RSA-4096, killed while C_GenerateKeyPair runs.
    let server = Server::start(&token, "rsa-4096", "workers = 2\n");
    let load = Load::start(std::slice::from_ref(&server.addr), 2, usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&server, "hsm_csr_sessions_in_use").unwrap_or(0.0) < 2.0 {
        assert!(Instant::now() < deadline, "no call reached the token");
        std::thread::sleep(Duration::from_millis(5));
    }
    sigkill(server.pid());
    let (answered, cut_off) = load.finish_with_unanswered();
    delivered.extend(answered);
    unanswered.extend(cut_off);

    let server = Server::start(&token, token.ec_or_rsa(), "");
    let log = server.stop();
    assert_eq!(
        only_delivered_and_unassigned(&token, &delivered, &unanswered),
        0,
        "{log}"
    );
}

/// The private SoftHSM token's object files (`<uuid>.object` in its
/// token directory, beside `token.object`).
fn object_files(token: &Token) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    let store = token.dir().join("store/tokens");
    for dir in std::fs::read_dir(store).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let path = file.path();
            let name = file.file_name();
            if name != "token.object" && path.extension().is_some_and(|e| e == "object") {
                files.insert(path);
            }
        }
    }
    files
}

/// The marks (64 hex digits after "hsm") of the undelivered private keys
/// on `token` that `known` does not list.
fn new_marks(token: &Token, known: &BTreeSet<String>) -> Vec<String> {
    let mark_prefix = hsm_csr::fingerprint::hex(b"hsm");
    token
        .keys()
        .iter()
        .filter(|o| o["class"] == "private")
        .filter_map(|o| o["id"].as_str())
        .filter(|id| id.len() == 64 && id.starts_with(&mark_prefix) && !known.contains(*id))
        .map(str::to_owned)
        .collect()
}

/// `serve` making one RSA-4096 key after another for a single caller,
/// frozen (SIGSTOP) the moment a new object file holds a private key (an
/// RSA-4096 private key's file is some 3.5 KB, its public key's 1.2 KB,
/// and SoftHSM writes each in one go): its C_GenerateKeyPair has just
/// written it, and its delivery is still a signature away. Watched
/// through the file system, never through PKCS #11: SoftHSM 2.6.1's
/// C_GetAttributeValue in a second process can load an object whose file
/// is still being written and write that partial view back (SoftHSM
/// issue #573, fixed in 2.7.0), corrupting the key it watches.
fn catch_a_key(token: &Token) -> Option<(Server, Load)> {
    let server = Server::start(token, "rsa-4096", "workers = 1\n");
    let before = object_files(token);
    let load = Load::start(std::slice::from_ref(&server.addr), 1, usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(60);
    let private_key_written = || {
        object_files(token)
            .difference(&before)
            .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 2500))
    };
    while !private_key_written() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Command::new("kill")
        .args(["-STOP", &server.pid().to_string()])
        .status()
        .unwrap();
    Some((server, load))
}

#[test]
fn a_key_caught_before_its_delivery_is_gone_after_a_sigkill_and_a_restart() {
    let Some(token) = Token::private_softhsm(
        "watches the token's object files, which only a private SoftHSM2 token shows",
    ) else {
        return;
    };
    // Twice: a SIGKILL that lands while SoftHSM rewrites the caught key's
    // file tears it, and a torn object is gone whatever the code does.
    let mut caught_twice = 0;
    for _ in 0..12 {
        let known: BTreeSet<String> = token
            .keys()
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_owned))
            .collect();
        let Some((server, load)) = catch_a_key(&token) else {
            continue;
        };
        // The serve log says whether the call was handed over (the access
        // log line comes before the response is written).
        let handed_over = server.log_text().contains("code=OK");
        sigkill(server.pid());
        let delivered = load.finish();
        // Read once nothing writes: the pairs the frozen process had made
        // and not delivered.
        let caught = new_marks(&token, &known);
        let restart = Server::start(&token, "rsa-4096", "");
        restart.stop();
        if handed_over || !delivered.is_empty() || caught.is_empty() {
            // Caught too late (that key was delivered), or torn: again,
            // from a token with only delivered keys.
            continue;
        }
        let (pairs, lone) = pairs(&token);
        // Caught undelivered (on the token when the restart began): its
        // private key's mark, and its public key under the mark's last 16
        // bytes.
        for mark in &caught {
            let public = &mark[mark.len() - 32..];
            for id in [mark.as_str(), public] {
                assert!(
                    !pairs.contains_key(id) && !lone.iter().any(|l| l == id),
                    "the key pair {mark}, made for a call that was never answered, \
                     is still on the token after a restart: {pairs:#?} {lone:?}"
                );
            }
        }
        caught_twice += 1;
        if caught_twice == 2 {
            return;
        }
    }
    panic!("caught a key before its delivery fewer than twice in 12 tries");
}

/// SIGKILLs the process it names when dropped, unless disarmed (None).
struct KillOnDrop(Option<String>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = &self.0 {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

#[test]
fn a_live_processs_undelivered_key_is_never_swept_and_a_dead_ones_is() {
    let token = Token::new();
    if matches!(token.name.as_str(), "opencryptoki" | "tpm2") {
        // openCryptoki's soft token serialises every process's calls on one
        // lock, tpm2-pkcs11 every writer on its sqlite store's: a process
        // stopped mid-keygen, as here, holds it, and everyone else waits.
        crate::common::skip(
            &token,
            "a process stopped inside a call holds the token's lock across processes",
        );
        return;
    }
    let create = token
        .hsm_csr()
        .arg("create")
        .args(token.token_flags())
        .args(["--label-prefix", &token.prefix])
        .args([
            "--key-type",
            "rsa",
            "--key-size",
            "4096",
            "--common-name",
            "live.example.com",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held still, so it is surely running (not done) while serve starts.
    let pid = create.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    // Should the test fail while it is stopped, it must not stay so: it
    // would hold the token for every test after this one.
    let mut stopped = KillOnDrop(Some(pid.clone()));
    let live = Owner::of_process(create.id(), KIND_PROCESS).unwrap();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let gone = Owner::of_process(sleeper.id(), KIND_PROCESS).unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let live_id = plant(&token, &live, &[1; 16]);
    let gone_id = plant(&token, &gone, &[2; 16]);

    let server = Server::start(&token, token.ec_or_rsa(), "");
    let (keys, _) = pairs(&token);
    assert!(
        keys.contains_key(&live_id),
        "a live process's key was swept"
    );
    assert!(!keys.contains_key(&gone_id), "a dead process's key remains");
    let listed = token.run(&["keys", "list"], &[]).ok().stdout;
    assert!(
        listed.contains(&format!("undelivered (pid {pid} on host")),
        "{listed}"
    );
    let log = server.stop();
    assert!(log.contains("removed 1 key pair(s)"), "{log}");

    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    stopped.0 = None;
    let out = create.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A mark of a dead owner planted over the delivered key's CKA_ID
    // (anyone logged in to the token could): the sweep removes the planted
    // pair, never the delivered one.
    let (keys, _) = pairs(&token);
    let delivered_id = keys.keys().find(|id| id.len() == 32).unwrap();
    let r: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&delivered_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    plant(&token, &gone, &r);
    // create is gone now: the next start removes what it left marked.
    let server = Server::start(&token, token.ec_or_rsa(), "");
    server.stop();
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let md5 = created["PubMd5"].as_str().unwrap().to_owned();
    only_delivered_and_unassigned(&token, &[md5], &[]);
}

#[test]
fn create_and_batch_remove_what_stopped_processes_left_undelivered() {
    let token = Token::new();
    let dead = || {
        let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
        let gone = Owner::of_process(sleeper.id(), KIND_PROCESS).unwrap();
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        gone
    };
    // This test process runs: its mark is a call in flight.
    let live = Owner::of_process(std::process::id(), KIND_PROCESS).unwrap();
    let live_id = plant(&token, &live, &[3; 16]);
    let gone_id = plant(&token, &dead(), &[4; 16]);
    // A run that stopped before it was done left its note: the next run
    // sweeps (without one, it does not search: tests/budget.rs).
    interrupted_create(&token);
    token.create(&["--common-name", "sweeper.example.com"]).ok();
    let (keys, _) = pairs(&token);
    assert!(
        keys.contains_key(&live_id),
        "a live process's key was swept"
    );
    assert!(
        !keys.contains_key(&gone_id),
        "create left a dead process's key"
    );

    let gone_id = plant(&token, &dead(), &[5; 16]);
    interrupted_create(&token);
    let input = token.dir().join("one.jsonl");
    std::fs::write(&input, "{\"CommonName\":\"batch-sweeper.example.com\"}\n").unwrap();
    token
        .run(
            &["batch"],
            &[
                "--label-prefix",
                &token.prefix,
                "--input",
                input.to_str().unwrap(),
            ],
        )
        .ok();
    let (keys, _) = pairs(&token);
    assert!(
        !keys.contains_key(&gone_id),
        "batch left a dead process's key"
    );
    assert!(keys.contains_key(&live_id));
}

#[test]
fn serve_removes_a_torn_pool_key_and_lone_public_halves_at_start() {
    let Some(token) = Token::private_softhsm("plants torn keys") else {
        return;
    };
    // A pool key whose public half a crash tore off, and a delivered key's
    // lone public half, both under this test's label prefix.
    let pool_id = format!(
        "{}{}",
        hsm_csr::fingerprint::hex(b"hsm-pool"),
        "7b".repeat(16)
    );
    let lone_id = "7c".repeat(16);
    for (id, label) in [
        (&pool_id, format!("{}pool:unassigned", token.prefix)),
        (&lone_id, format!("{}lone.example.com", token.prefix)),
    ] {
        token.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            id,
            "--label",
            &label,
        ]);
    }
    token.pkcs11_tool(&["--delete-object", "--type", "pubkey", "--id", &pool_id]);
    token.pkcs11_tool(&["--delete-object", "--type", "privkey", "--id", &lone_id]);
    let ids = || -> Vec<String> {
        token
            .keys()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(ids().contains(&pool_id) && ids().contains(&lone_id));
    // A delivered key, whole, stays.
    token.create(&["--common-name", "kept.example.com"]).ok();
    let kept: Vec<String> = ids()
        .into_iter()
        .filter(|id| *id != pool_id && *id != lone_id)
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let server = Server::start(&token, token.ec_or_rsa(), "");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids().contains(&pool_id) || ids().contains(&lone_id) {
        assert!(
            Instant::now() < deadline,
            "still there after the start: {:?}",
            ids()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ids(), kept, "the delivered key stays");
    server.stop();
}

/// `keys prune --orphans` on a token where another process is making a key
/// pair: the token writes the public object (under its final CKA_ID)
/// before the marked private one, so the first listing shows a lone public
/// half. The private key that appears during the prune's pause joins it,
/// and it stays; a control whose private key carries another pair's mark
/// shows the pause really saw it lone, and that public half goes.
#[test]
fn keys_prune_spares_the_public_half_of_a_pair_another_process_is_making() {
    let Some(token) = Token::private_softhsm("plants halves with pkcs11-tool at set moments") else {
        return;
    };
    let live = Owner::of_process(std::process::id(), KIND_PROCESS).unwrap();
    let key_type = if token.lacks("ec-p256") {
        "rsa:2048"
    } else {
        "EC:prime256v1"
    };
    // A public half under `r`, alone; then, while a prune pauses, a private
    // half marked by `live` over `joins`.
    let raced = |r: [u8; 16], joins: [u8; 16]| -> bool {
        let public_id = hsm_csr::fingerprint::hex(&r);
        token.pkcs11_tool(&[
            "--keypairgen", "--key-type", key_type, "--id", &public_id,
            "--label", "hsm-csr:made.example.com",
        ]);
        token.pkcs11_tool(&["--delete-object", "--type", "privkey", "--id", &public_id]);
        let mut prune = token.hsm_csr();
        prune
            .args(["keys", "prune", "--orphans", "--yes"])
            .args(token.token_flags())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let prune = prune.spawn().unwrap();
        // Its listing takes well under this; its pause is 2 s.
        std::thread::sleep(Duration::from_millis(700));
        let mark = plant(&token, &live, &joins);
        token.pkcs11_tool(&["--delete-object", "--type", "pubkey", "--id", &mark]);
        let out = prune.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let kept = token
            .pkcs11_tool(&["--list-objects", "--type", "pubkey"])
            .contains(&public_id);
        token.pkcs11_tool(&["--delete-object", "--type", "privkey", "--id", &mark]);
        if kept {
            token.pkcs11_tool(&["--delete-object", "--type", "pubkey", "--id", &public_id]);
        }
        kept
    };
    assert!(
        !raced([0x11; 16], [0x22; 16]),
        "control: a public half that stayed alone through the pause was kept"
    );
    assert!(
        raced([0x33; 16], [0x33; 16]),
        "the public half of a pair being made was pruned as a lone half"
    );
}
