//! No undelivered key outlives its maker. Every key pair carries
//! a "not yet delivered" mark naming its process until its response is
//! handed over; `serve` SIGKILLed mid-call, restarted, leaves exactly the
//! delivered keys; a live process's marked key is never swept; replicas on
//! one token share its pool through Redis claims. Keys are counted with
//! PyKCS11 (tests/tools/p11inspect.py), not with hsm-csr.
//!
//! This file holds the load, the key count and the checks; [`sweeps`]
//! kills `serve` (or plants marked keys) and restarts it, [`pool_claims`]
//! runs replicas on one pool through Redis, [`leases`] judges owners on
//! other hosts by their Redis lease.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm_csr::backend::pkcs11::id::{self, Owner};
use serde_json::Value;

use crate::common::Token;
use crate::common::rpc::{parse, signed_query};

mod leases;
mod pool_claims;
mod sweeps;

/// The common name of call `n`.
fn common_name(n: usize) -> String {
    format!("d{n}.example.com")
}

/// One call; its PubMd5, or None when the server did not answer 200.
fn try_call(addr: &str, n: usize) -> Option<String> {
    let cn = common_name(n);
    let query = signed_query("MainKey", "s3cret", &[("CommonName", cn.as_str())]);
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET /?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let answer = parse(&raw);
    if answer.status != 200 {
        return None;
    }
    let body: Value = serde_json::from_str(&answer.body).ok()?;
    body["PubMd5"].as_str().map(str::to_owned)
}

/// Calls from `threads` threads, thread i to `addrs[i % len]`, until `stop`
/// or `limit` calls were made in all; every PubMd5 received goes into
/// `delivered`.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    delivered: Arc<Mutex<Vec<String>>>,
    /// Common names of the calls that got no answer.
    unanswered: Arc<Mutex<Vec<String>>>,
}

impl Load {
    pub(crate) fn start(addrs: &[String], threads: usize, limit: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let unanswered = Arc::new(Mutex::new(Vec::new()));
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|i| {
                let (stop, delivered, made) =
                    (Arc::clone(&stop), Arc::clone(&delivered), Arc::clone(&made));
                let unanswered = Arc::clone(&unanswered);
                let addr = addrs[i % addrs.len()].clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let n = made.fetch_add(1, Ordering::Relaxed);
                        if n >= limit {
                            break;
                        }
                        match try_call(&addr, n) {
                            Some(md5) => delivered.lock().unwrap().push(md5),
                            None => {
                                unanswered.lock().unwrap().push(common_name(n));
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            delivered,
            unanswered,
        }
    }

    fn count(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }

    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} calls delivered",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> Vec<String> {
        self.finish_with_unanswered().0
    }

    /// PubMd5 of the answered calls, common names of the others.
    pub(crate) fn finish_with_unanswered(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let take = |v: Arc<Mutex<Vec<String>>>| Arc::try_unwrap(v).unwrap().into_inner().unwrap();
        (take(self.delivered), take(self.unanswered))
    }
}

fn sigkill(pid: u32) {
    assert!(pid > 1, "SIGKILL to pid {pid}");
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// What PyKCS11 sees: this test's key pairs, by CKA_ID (hex), with their
/// label, and the CKA_IDs of lone public key objects. A lone private key
/// fails the test; a lone public key is what SoftHSM shows when a process
/// is killed while it rewrites the private key's file (its object files
/// are rewritten in place, so the torn private key is no longer readable):
/// no secret, nothing any process can remove through PKCS #11 but that
/// public object. A private object whose file was cut short lists without
/// its last attributes (`complete` false in p11inspect.py): torn too.
fn pairs(token: &Token) -> (BTreeMap<String, String>, Vec<String>) {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in token.keys() {
        by_id
            .entry(o["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(o);
    }
    let (mut pairs, mut lone) = (BTreeMap::new(), Vec::new());
    for (id, objects) in by_id {
        let classes: Vec<&str> = objects
            .iter()
            .map(|o| o["class"].as_str().unwrap())
            .collect();
        // A private object cut short is torn the same way.
        let torn = classes == ["private"] && objects[0]["complete"] == false;
        if classes == ["public"] || torn {
            lone.push(id);
            continue;
        }
        assert!(
            objects.len() == 2 && classes.contains(&"public") && classes.contains(&"private"),
            "CKA_ID {id} is not one key pair: {objects:#?}"
        );
        pairs.insert(id, objects[0]["label"].as_str().unwrap().to_owned());
    }
    (pairs, lone)
}

/// Checks the token holds the `delivered` keys (16-byte CKA_IDs, PubMd5 as
/// `keys list` reads them) and unassigned pool keys, and no other key pair
/// but those of `unanswered` calls whose response was handed over and cut
/// off on its way (a SIGKILL between hand-over and the caller's read: no
/// process can tell those from delivered ones), at most one per such call;
/// returns how many unassigned pool keys.
fn only_delivered_and_unassigned(
    token: &Token,
    delivered: &[String],
    unanswered: &[String],
) -> usize {
    let (pairs, lone) = pairs(token);
    if !lone.is_empty() {
        eprintln!("lone public key objects (torn SoftHSM writes): {lone:?}");
    }
    let unassigned = format!("{}pool:unassigned", token.prefix);
    let pool_prefix = hsm_csr::fingerprint::hex(b"hsm-pool");
    let (mut final_ids, mut waiting) = (BTreeMap::new(), 0);
    for (id, label) in &pairs {
        if id.len() == 32 {
            final_ids.insert(id.clone(), label.clone());
        } else if id.len() == 48 && id.starts_with(&pool_prefix) && *label == unassigned {
            waiting += 1;
        } else {
            panic!("neither delivered nor unassigned: CKA_ID {id}, label {label:?}\n{pairs:#?}");
        }
    }
    let distinct: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(distinct.len(), delivered.len(), "a key went to two callers");
    let listed: BTreeMap<String, String> = token
        .run(&["keys", "list"], &["--format", "json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| final_ids.contains_key(k["Id"].as_str().unwrap()))
        .map(|k| {
            (
                k["PubMd5"].as_str().unwrap().to_owned(),
                k["Label"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for md5 in &distinct {
        assert!(
            listed.contains_key(*md5),
            "delivered key {md5} is not on the token"
        );
    }
    let cut_off: BTreeSet<String> = unanswered
        .iter()
        .map(|cn| format!("{}{cn}", token.prefix))
        .collect();
    let extra: Vec<&String> = listed
        .iter()
        .filter(|(md5, _)| !distinct.contains(md5))
        .map(|(_, label)| label)
        .collect();
    for label in &extra {
        assert!(
            cut_off.contains(*label),
            "key pair {label:?} was never handed to a caller (its call was not cut off)"
        );
    }
    let extra_labels: BTreeSet<&String> = extra.iter().copied().collect();
    assert_eq!(
        extra_labels.len(),
        extra.len(),
        "two keys for one cut-off call"
    );
    assert_eq!(
        final_ids.len(),
        listed.len(),
        "key pairs with a final CKA_ID that `keys list` does not show"
    );
    if !extra.is_empty() {
        eprintln!("keys handed over whose response was cut off by the SIGKILL: {extra:?}");
    }
    waiting
}

/// A key pair planted with pkcs11-tool under `owner`'s mark over `r`.
fn plant(token: &Token, owner: &Owner, r: &[u8]) -> String {
    let id = hsm_csr::fingerprint::hex(&id::mark(owner, r));
    let key_type = if token.lacks("ec-p256") {
        "rsa:2048"
    } else {
        "EC:prime256v1"
    };
    token.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        key_type,
        "--id",
        &id,
        "--label",
        &format!("{}undelivered", token.prefix),
    ]);
    id
}
