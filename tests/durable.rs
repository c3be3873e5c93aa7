//! Issue 11: no undelivered key outlives its maker. Every key pair carries
//! a "not yet delivered" mark naming its process until its response is
//! handed over; `serve` SIGKILLed mid-call, restarted, leaves exactly the
//! delivered keys; a live process's marked key is never swept; replicas on
//! one token share its pool through Redis claims. Keys are counted with
//! PyKCS11 (tests/tools/p11inspect.py), not with hsm-csr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm_csr::backend::pkcs11::mark::{self, KIND_PROCESS, Owner};
use serde_json::Value;

use crate::common::redis::Redis;
use crate::common::rpc::{parse, signed_query};
use crate::common::server::{Server, metric};
use crate::common::{PIN, Token, python, repo};

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
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    delivered: Arc<Mutex<Vec<String>>>,
    /// Common names of the calls that got no answer.
    unanswered: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(addrs: &[String], threads: usize, limit: usize) -> Load {
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
    fn finish_with_unanswered(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let take = |v: Arc<Mutex<Vec<String>>>| Arc::try_unwrap(v).unwrap().into_inner().unwrap();
        (take(self.delivered), take(self.unanswered))
    }
}

fn sigkill(pid: u32) {
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
/// public object.
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
        if classes == ["public"] {
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

#[test]
fn serve_killed_under_load_leaves_only_the_delivered_keys_after_a_restart() {
    let Some(token) = Token::private_softhsm("SIGKILLs serve mid-call") else {
        return;
    };
    let (mut delivered, mut unanswered) = (Vec::new(), Vec::new());
    // Short EC calls: most of the time some key exists and is not
    // delivered yet. Four times, to make that all but certain.
    for _ in 0..4 {
        let server = Server::start(&token, "ec-p256", "workers = 3\n");
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

    let server = Server::start(&token, "ec-p256", "");
    let log = server.stop();
    assert_eq!(
        only_delivered_and_unassigned(&token, &delivered, &unanswered),
        0,
        "{log}"
    );
}

/// The first private key object that appears on `token`, as PyKCS11 sees
/// it (tests/tools/p11watch.py), while `serve` makes one RSA-4096 key
/// after another for a single caller.
fn catch_a_key(token: &Token) -> Option<(Server, Load, String)> {
    let server = Server::start(token, "rsa-4096", "workers = 1\n");
    let mut watch = Command::new(python())
        .arg(repo().join("tests/tools/p11watch.py"))
        .args([&token.module, &token.label])
        .env("HSM_CSR_PIN", PIN)
        .env("SOFTHSM2_CONF", token.conf())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30));
    assert_eq!(ready.as_deref(), Ok("ready"));
    let load = Load::start(std::slice::from_ref(&server.addr), 1, usize::MAX);
    let caught = rx.recv_timeout(Duration::from_secs(60)).ok();
    // Frozen at once: the key's call is on its way, or answered already.
    Command::new("kill")
        .args(["-STOP", &server.pid().to_string()])
        .status()
        .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    Some((server, load, caught?))
}

#[test]
fn a_key_caught_before_its_delivery_is_gone_after_a_sigkill_and_a_restart() {
    let Some(token) = Token::private_softhsm("SIGKILLs serve mid-call") else {
        return;
    };
    // Twice: a SIGKILL that lands while SoftHSM rewrites the caught key's
    // file tears it, and a torn object is gone whatever the code does.
    let mut caught_twice = 0;
    for _ in 0..12 {
        let Some((server, load, caught)) = catch_a_key(&token) else {
            continue;
        };
        // The serve log says whether the call was handed over (the access
        // log line comes before the response is written).
        let handed_over = server.log_text().contains("code=OK");
        sigkill(server.pid());
        let delivered = load.finish();
        if handed_over || !delivered.is_empty() {
            // Caught too late: that key was delivered. Again, from a
            // token with only delivered keys.
            let restart = Server::start(&token, "rsa-4096", "");
            restart.stop();
            continue;
        }
        let restart = Server::start(&token, "rsa-4096", "");
        restart.stop();
        let (pairs, lone) = pairs(&token);
        assert!(
            !pairs.contains_key(&caught) && !lone.contains(&caught),
            "the key pair with CKA_ID {caught}, made for a call that was never answered, \
             is still on the token after a restart: {pairs:#?}"
        );
        caught_twice += 1;
        if caught_twice == 2 {
            return;
        }
    }
    panic!("caught a key before its delivery fewer than twice in 12 tries");
}

/// A key pair planted with pkcs11-tool under `owner`'s mark over `r`.
fn plant(token: &Token, owner: &Owner, r: &[u8]) -> String {
    let id = hsm_csr::fingerprint::hex(&mark::mark(owner, r));
    token.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        &id,
        "--label",
        &format!("{}undelivered", token.prefix),
    ]);
    id
}

#[test]
fn a_live_processs_undelivered_key_is_never_swept_and_a_dead_ones_is() {
    let Some(token) = Token::private_softhsm("plants marked keys") else {
        return;
    };
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
    let live = Owner::of_process(create.id(), KIND_PROCESS).unwrap();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let gone = Owner::of_process(sleeper.id(), KIND_PROCESS).unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let live_id = plant(&token, &live, &[1; 16]);
    let gone_id = plant(&token, &gone, &[2; 16]);

    let server = Server::start(&token, "ec-p256", "");
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
    let server = Server::start(&token, "ec-p256", "");
    server.stop();
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let md5 = created["PubMd5"].as_str().unwrap().to_owned();
    only_delivered_and_unassigned(&token, &[md5], &[]);
}

fn pool_config(redis: Option<&Redis>) -> (String, &'static str) {
    let extra = match redis {
        Some(r) => format!("workers = 2\nredis_url = \"{}\"\n", r.url()),
        None => "workers = 2\n".to_owned(),
    };
    (extra, "[pool]\nsize = 6\n")
}

/// A token whose pool holds 6 keys made by a `serve` that then stopped,
/// for several replicas to adopt at once.
fn token_with_a_pool() -> Option<Token> {
    let token = Token::private_softhsm("several serve processes on one token")?;
    let server = Server::start_with(&token, "ec-p256", "", "[pool]\nsize = 6\n");
    crate::common::server::wait_for(&server, "hsm_csr_pool_depth", 6.0);
    server.stop();
    Some(token)
}

fn replicas(token: &Token, redis: Option<&Redis>) -> Vec<Server> {
    let (extra, pool) = pool_config(redis);
    (0..3)
        .map(|_| Server::start_with(token, "ec-p256", &extra, pool))
        .collect()
}

#[test]
fn three_replicas_share_one_pool_through_redis_and_no_key_goes_to_two_callers() {
    let Some(token) = token_with_a_pool() else {
        return;
    };
    let redis = Redis::start();
    let servers = replicas(&token, Some(&redis));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let load = Load::start(&addrs, 6, 60);
    load.wait_for(60);
    let (delivered, unanswered) = load.finish_with_unanswered();
    assert_eq!(unanswered, Vec::<String>::new(), "calls failed");
    let hits: f64 = servers
        .iter()
        .map(|s| metric(s, "hsm_csr_pool_hits_total").unwrap_or(0.0))
        .sum();
    if hits == 0.0 {
        let m = servers[0].get("/metrics").unwrap_or_default();
        let logs: Vec<String> = servers.into_iter().map(Server::stop).collect();
        panic!(
            "no call was served from the pool:\n{m}\n{}",
            logs.join("\n----\n")
        );
    }
    for s in servers {
        s.stop();
    }
    only_delivered_and_unassigned(&token, &delivered, &[]);
}

#[test]
fn a_replica_killed_under_load_leaves_no_undelivered_key_after_its_restart() {
    let Some(token) = token_with_a_pool() else {
        return;
    };
    let redis = Redis::start();
    let mut servers = replicas(&token, Some(&redis));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let load = Load::start(&addrs, 6, usize::MAX);
    load.wait_for(20);
    sigkill(servers[0].pid());
    let before = load.count();
    load.wait_for(before + 10);
    let (delivered, unanswered) = load.finish_with_unanswered();
    let (extra, pool) = pool_config(Some(&redis));
    servers[0] = Server::start_with(&token, "ec-p256", &extra, pool);
    for s in servers {
        s.stop();
    }
    only_delivered_and_unassigned(&token, &delivered, &unanswered);
}

#[test]
fn with_redis_down_calls_are_refused_no_pool_key_is_taken_and_the_pool_returns_with_it() {
    let Some(token) = token_with_a_pool() else {
        return;
    };
    let mut redis = Redis::start();
    let servers = replicas(&token, Some(&redis));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let hits = |servers: &[Server]| -> f64 {
        servers
            .iter()
            .map(|s| metric(s, "hsm_csr_pool_hits_total").unwrap_or(0.0))
            .sum()
    };
    // Down: the shared state fails closed, so every call is refused (503)
    // before any key is made, and no key is taken from the pool.
    redis.stop();
    let before = hits(&servers);
    let load = Load::start(&addrs, 3, 12);
    let deadline = Instant::now() + Duration::from_secs(60);
    while load.count() + load.unanswered.lock().unwrap().len() < 12 {
        assert!(
            Instant::now() < deadline,
            "calls did not end while Redis was down"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut delivered, unanswered) = load.finish_with_unanswered();
    assert_eq!(
        delivered,
        Vec::<String>::new(),
        "a call was answered without Redis"
    );
    assert_eq!(unanswered.len(), 12);
    assert_eq!(
        hits(&servers),
        before,
        "a pool key was taken without a claim"
    );
    redis.restart();
    for s in &servers {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s
            .get("/healthz")
            .is_some_and(|h| h.contains(r#""SharedState":"reachable""#))
        {
            assert!(Instant::now() < deadline, "Redis never seen back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Back (empty): claims succeed again (once each replica's coordinator
    // has reconnected), and a replica whose key another claimed before the
    // restart finds it no longer carries its pool ID.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hits(&servers) == before {
        assert!(Instant::now() < deadline, "the pool was not used again");
        let load = Load::start(&addrs, 3, 9);
        load.wait_for(9);
        let (more, unanswered) = load.finish_with_unanswered();
        assert_eq!(unanswered, Vec::<String>::new());
        delivered.extend(more);
        std::thread::sleep(Duration::from_millis(300));
    }
    for s in servers {
        s.stop();
    }
    only_delivered_and_unassigned(&token, &delivered, &[]);
}

/// Owners on another host (a host hash not ours): a leased one is judged by
/// its lease in Redis, once Redis has kept leases long enough that every
/// live replica renewed its own; one without a lease is never judged.
#[test]
fn owners_on_other_hosts_are_judged_by_their_redis_lease_only() {
    let Some(token) = Token::private_softhsm("plants marked keys") else {
        return;
    };
    let redis = Redis::start();
    let me = Owner::this_process(KIND_PROCESS);
    let elsewhere = |kind, pid| Owner {
        kind,
        host: [!me.host[0], me.host[1], me.host[2], me.host[3]],
        pid,
        start: [1, 2, 3, 4],
    };
    let (leased, lapsed, unleased) = (
        elsewhere(mark::KIND_LEASED, 10),
        elsewhere(mark::KIND_LEASED, 11),
        elsewhere(KIND_PROCESS, 12),
    );
    let lease = |o: &Owner| format!("hsm-csr:lease:{}", hsm_csr::fingerprint::hex(&o.bytes()));
    redis.cli(&["SET", &lease(&leased), "1", "PX", "600000"]);
    let ids = [
        plant(&token, &leased, &[1; 16]),
        plant(&token, &lapsed, &[2; 16]),
        plant(&token, &unleased, &[3; 16]),
    ];
    let extra = format!("redis_url = \"{}\"\n", redis.url());
    let on_token = |token: &Token| -> Vec<bool> {
        let (keys, _) = pairs(token);
        ids.iter().map(|id| keys.contains_key(id)).collect()
    };
    // A Redis that has kept leases only since just now (as after a restart
    // empty): a missing lease proves nothing yet.
    let server = Server::start(&token, "ec-p256", &extra);
    let log = server.stop();
    assert_eq!(on_token(&token), [true, true, true], "{log}");
    assert!(log.contains("not yet delivered by pid 12 on host"), "{log}");
    // Leases kept for long enough: the lapsed owner's key goes.
    let time = redis.cli(&["TIME"]);
    let now: u64 = time.lines().next().unwrap().trim().parse().unwrap();
    let long_ago = (now - 120).to_string();
    redis.cli(&["SET", "hsm-csr:leases-since", &long_ago]);
    let server = Server::start(&token, "ec-p256", &extra);
    let log = server.stop();
    assert_eq!(on_token(&token), [true, false, true], "{log}");
}
