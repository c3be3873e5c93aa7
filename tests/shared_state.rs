//! Replicas that share their rate limit and nonces through Redis (issue 11,
//! items 1 and 2), against a real `redis-server` and real `serve`
//! processes, with short counts: the scenarios of `scripts/cluster.sh`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hsm_csr::service::limits::{Refusal, SharedLimits};
use hsm_csr::service::metrics::SharedStateMetrics;

use crate::common::Token;
use crate::common::redis::Redis;
use crate::common::rpc::{self, Answer, get, signed_query};
use crate::common::server::{Server, metric};

fn fresh_query() -> String {
    signed_query("MainKey", "s3cret", &[("CommonName", "shared.example.com")])
}

fn shared_limits(redis: &Redis, limit: u32) -> SharedLimits {
    let client = redis::Client::open(redis.url()).unwrap();
    SharedLimits::new(client, "t", limit, SharedStateMetrics::default())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The Lua script against a real Redis: the sliding window, the order of
/// the checks (a throttled call is not counted and records no nonce), the
/// nonce record and its lifetime, per access key.
#[test]
fn the_script_keeps_the_in_memory_meaning() {
    let redis = Redis::start();
    let limits = shared_limits(&redis, 3);
    let life = Duration::from_secs(60);
    runtime().block_on(async {
        for n in ["n1", "n2", "n3"] {
            assert_eq!(limits.admit("a", Some(n), life).await, Ok(()));
        }
        let ttl: i64 = redis.cli(&["PTTL", "t:rate:61"]).trim().parse().unwrap();
        assert!(ttl > 0 && ttl <= 1000, "the window's PTTL: {ttl}");
        let Err(Refusal::Throttled(wait)) = limits.admit("a", Some("n4"), life).await else {
            panic!("the fourth call in a second was admitted");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limits.admit("b", Some("n1"), life).await, Ok(()), "per key");
        // The window slides: once the first calls are a second old, n4
        // (refused, so never recorded) is admitted, and n1 is still used.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match limits.admit("a", Some("n4"), life).await {
                Ok(()) => break,
                Err(Refusal::Throttled(_)) => {}
                other => panic!("{other:?}"),
            }
            assert!(Instant::now() < deadline, "the window never slid");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            limits.admit("a", Some("n1"), life).await,
            Err(Refusal::NonceUsed)
        );
        // A call without a nonce (timestamp out of the window) counts.
        assert_eq!(limits.admit("c", None, life).await, Ok(()));
        assert_eq!(limits.admit("c", None, life).await, Ok(()));
        assert_eq!(limits.admit("c", None, life).await, Ok(()));
        assert!(matches!(
            limits.admit("c", Some("x"), life).await,
            Err(Refusal::Throttled(_))
        ));
        // A nonce is forgotten after its lifetime (SET PX), not before.
        let short = Duration::from_millis(300);
        assert_eq!(limits.admit("d", Some("m"), short).await, Ok(()));
        assert_eq!(
            limits.admit("d", Some("m"), short).await,
            Err(Refusal::NonceUsed)
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(limits.admit("d", Some("m"), short).await, Ok(()));
    });
}

/// One command per call, the script by its hash, rate and nonce together
/// (the script is loaded once, after the first EVALSHA finds it missing).
#[test]
fn one_round_trip_per_call() {
    let redis = Redis::start();
    let limits = shared_limits(&redis, 100);
    let life = Duration::from_secs(60);
    let rt = runtime();
    rt.block_on(async { assert_eq!(limits.admit("a", Some("0"), life).await, Ok(())) });
    redis.cli(&["CONFIG", "RESETSTAT"]);
    rt.block_on(async {
        for n in ["1", "2", "3"] {
            assert_eq!(limits.admit("a", Some(n), life).await, Ok(()));
        }
        assert_eq!(
            limits.admit("a", Some("2"), life).await,
            Err(Refusal::NonceUsed)
        );
    });
    let stats = redis.cli(&["INFO", "commandstats"]);
    let commands: Vec<&str> = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_config"))
        .collect();
    // The script's own commands are counted too, once per call each: so
    // the client sent nothing but the four EVALSHA.
    assert!(
        commands.iter().any(|l| l.starts_with("cmdstat_evalsha:")),
        "{stats}"
    );
    for c in commands {
        assert!(c.contains(":calls=4,"), "{c} in {stats}");
    }
}

/// Key names are built from hex only: a caller's access key id or nonce
/// cannot name another key, and a nonce of tens of KB (as large as the
/// body limit allows) takes a fixed-size key.
#[test]
fn caller_values_cannot_shape_or_grow_keys() {
    let redis = Redis::start();
    let limits = shared_limits(&redis, 100);
    let life = Duration::from_secs(60);
    let hostile = format!(
        "x:rate:61 {}\r\n*1\r\n$8\r\nFLUSHALL\r\n",
        "N".repeat(60_000)
    );
    runtime().block_on(async {
        assert_eq!(limits.admit("a:b", Some(&hostile), life).await, Ok(()));
        assert_eq!(
            limits.admit("a:b", Some(&hostile), life).await,
            Err(Refusal::NonceUsed)
        );
        assert_eq!(limits.admit("a", Some("b:n"), life).await, Ok(()));
    });
    let mut keys: Vec<String> = redis.cli(&["--scan"]).lines().map(str::to_owned).collect();
    keys.sort();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for k in &keys {
        let mut parts = k.split(':');
        assert_eq!(parts.next(), Some("t"), "{k}");
        let kind = parts.next().unwrap();
        assert!(kind == "rate" || kind == "nonce", "{k}");
        let rest: Vec<&str> = parts.collect();
        assert!(
            rest.iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_hexdigit())),
            "{k}"
        );
        if kind == "nonce" {
            assert_eq!(rest[1].len(), 64, "a SHA-256 of the nonce: {k}");
        }
        assert!(k.len() < 160, "{k}");
    }
    let pttl: i64 = redis
        .cli(&["PTTL", keys.iter().find(|k| k.contains(":nonce:")).unwrap()])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "nonce PTTL {pttl}");
}

/// With Redis away every call is refused (fail closed) within the budget,
/// without waiting long, and admitted again once it is back.
#[test]
fn refused_while_redis_is_away_and_admitted_again_after() {
    let mut redis = Redis::start();
    let limits = shared_limits(&redis, 100);
    let life = Duration::from_secs(60);
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(limits.admit("a", Some("1"), life).await, Ok(()));
        assert!(limits.ping().await);
    });
    // A Redis that holds its answers (CLIENT PAUSE) is no better: each
    // call is refused within the budget, none waits for it.
    redis.cli(&["CLIENT", "PAUSE", "3000", "ALL"]);
    rt.block_on(async {
        let asked = Instant::now();
        assert_eq!(
            limits.admit("a", Some("p"), life).await,
            Err(Refusal::Unreachable)
        );
        let refused_after = asked.elapsed();
        assert!(refused_after < Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !limits.ping().await {
            assert!(Instant::now() < deadline, "never answered after the pause");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "a paused Redis: the call refused after {} ms",
            refused_after.as_millis()
        );
    });
    redis.stop();
    rt.block_on(async {
        for n in ["1", "2", "3"] {
            let asked = Instant::now();
            assert_eq!(
                limits.admit("a", Some(n), life).await,
                Err(Refusal::Unreachable)
            );
            assert!(asked.elapsed() < Duration::from_secs(10));
        }
        assert!(!limits.ping().await);
    });
    redis.restart();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !limits.ping().await {
            assert!(Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(limits.admit("a", Some("2"), life).await, Ok(()));
    });
}

/// A connection to each address, a request written on each at (nearly)
/// the same instant once all are open; the answers, and how long from the
/// first write to the last answer.
fn burst(requests: Vec<(String, String)>) -> (Vec<Answer>, Duration) {
    let barrier = Barrier::new(requests.len() + 1);
    std::thread::scope(|s| {
        let calls: Vec<_> = requests
            .iter()
            .map(|(addr, query)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let request = format!(
                        "GET /?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                    );
                    barrier.wait();
                    stream.write_all(request.as_bytes()).unwrap();
                    let mut raw = Vec::new();
                    let _ = stream.read_to_end(&mut raw);
                    (rpc::parse(&raw), Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let answers: Vec<(Answer, Instant)> =
            calls.into_iter().map(|c| c.join().unwrap()).collect();
        let last = answers.iter().map(|(_, t)| *t).max().unwrap_or(started);
        (
            answers.into_iter().map(|(a, _)| a).collect(),
            last - started,
        )
    })
}

const RATE: usize = 20;
const CALLS: usize = 120;
const SUCCESSES: usize = 15;

/// Three replicas, one access key, 20 calls a second: 120 calls at once,
/// spread over the replicas, admit at most 20; then every successful
/// call, replayed to another replica, is refused.
///
/// The burst's calls carry a Country of three letters: an admitted one is
/// answered InvalidValue.Malformed at once, without touching the token, so
/// that the burst takes well under a second and the figure is the rate
/// limit's alone.
#[test]
fn three_replicas_share_one_rate_limit_and_one_nonce_record() {
    let Some(token) = Token::private_softhsm("three replicas on one private token") else {
        return;
    };
    let redis = Redis::start();
    let extra = format!("rate_limit = {RATE}\nredis_url = \"{}\"\n", redis.url());
    let replicas: Vec<Server> = (0..3)
        .map(|_| Server::start(&token, "ec-p256", &extra))
        .collect();
    let requests: Vec<(String, String)> = (0..CALLS)
        .map(|i| {
            let query = signed_query(
                "MainKey",
                "s3cret",
                &[("CommonName", "a.example.com"), ("Country", "XXX")],
            );
            (replicas[i % 3].addr.clone(), query)
        })
        .collect();
    let (answers, span) = burst(requests);
    let codes: Vec<&str> = answers.iter().map(|a| a.code.as_str()).collect();
    let admitted = codes
        .iter()
        .filter(|c| **c == "InvalidValue.Malformed")
        .count();
    let throttled = codes.iter().filter(|c| **c == "Throttling.User").count();
    println!(
        "shared rate limit: {CALLS} calls over 3 replicas in {} ms at {RATE}/s: {admitted} admitted, {throttled} throttled",
        span.as_millis(),
    );
    assert_eq!(admitted + throttled, CALLS, "another error: {codes:?}");
    // Within one second the window admits RATE (1% over at most); a slower
    // burst spans more windows.
    let windows = span.as_secs() as usize + 1;
    assert!(
        admitted <= (RATE + RATE / 100) * windows,
        "{admitted} admitted in {span:?} at {RATE}/s across 3 replicas"
    );
    assert!(admitted > 0);

    // Successful calls, under the rate, over the replicas; once the window
    // is empty again, each one's request, as it was, goes to the next.
    std::thread::sleep(Duration::from_millis(1100));
    let queries: Vec<String> = (0..SUCCESSES).map(|_| fresh_query()).collect();
    for (i, q) in queries.iter().enumerate() {
        assert_eq!(code_of(&replicas[i % 3], q), "OK");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let replays: Vec<(String, String)> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| (replicas[(i + 1) % 3].addr.clone(), q.clone()))
        .collect();
    let (answers, _) = burst(replays);
    let codes: Vec<&str> = answers.iter().map(|a| a.code.as_str()).collect();
    let refused = codes.iter().filter(|c| **c == "SignatureNonceUsed").count();
    println!(
        "shared nonces: {SUCCESSES} successful calls replayed to another replica: {refused} refused"
    );
    assert_eq!(refused, SUCCESSES, "{codes:?}");
    for r in replicas {
        r.stop();
    }
}

fn code_of(server: &Server, query: &str) -> String {
    get(&server.addr, query).code
}

/// Redis killed for a few seconds under a trickle of calls: only 503
/// ServiceUnavailable (no success, no replay accepted, no key made),
/// /healthz and /metrics say so; after its restart, a normal answer
/// within 2 s. Redis asks for a password, which never reaches the log.
#[test]
fn redis_away_means_503_then_normal_answers_once_it_is_back() {
    let Some(token) = Token::private_softhsm("counts the keys on the token") else {
        return;
    };
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let mut redis = Redis::start_with(Some(&password));
    std::fs::write(token.dir().join("redis-password"), format!("{password}\n")).unwrap();
    let extra = format!(
        "redis_url = \"{}\"\nredis_password_file = \"redis-password\"\n",
        redis.url()
    );
    let server = Server::start(&token, "ec-p256", &extra);
    let used = fresh_query();
    assert_eq!(code_of(&server, &used), "OK");
    let health = server.get("/healthz").unwrap();
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#""SharedState":"reachable""#),
        "{health}"
    );
    assert_eq!(metric(&server, "hsm_csr_shared_state_reachable"), Some(1.0));
    let keys_before = token.keys().len();

    redis.stop();
    let outage = Instant::now();
    let mut refused = 0;
    while outage.elapsed() < Duration::from_secs(3) {
        for query in [fresh_query(), used.clone()] {
            let a = get(&server.addr, &query);
            assert_eq!(
                (a.status, a.code.as_str()),
                (503, "ServiceUnavailable"),
                "{}",
                a.body
            );
            assert!(a.body.contains("shared state"), "{}", a.body);
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = server.get("/healthz").unwrap();
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains(r#""SharedState":"unreachable""#),
        "{health}"
    );
    assert_eq!(metric(&server, "hsm_csr_shared_state_reachable"), Some(0.0));
    assert!(metric(&server, "hsm_csr_shared_state_errors_total").unwrap_or(0.0) >= refused as f64);
    assert_eq!(
        token.keys().len(),
        keys_before,
        "a key was made during the outage"
    );

    redis.restart();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(30);
    loop {
        if code_of(&server, &fresh_query()) == "OK" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no normal answer 30 s after Redis came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "Redis away {} ms: {refused} calls (half of them replays) all answered 503; first normal answer {} ms after it was back",
        back.duration_since(outage).as_millis(),
        back.elapsed().as_millis()
    );
    assert!(server.get("/healthz").unwrap().starts_with("HTTP/1.1 200"));
    let log = server.stop();
    assert!(
        log.contains("unreachable") && log.contains("reachable again"),
        "{log}"
    );
    assert!(
        !log.contains(&password),
        "the Redis password reached the log"
    );
}

/// A replica that starts while Redis is down (or with a wrong password)
/// starts, answers 503 and says why in its log without the password; it
/// answers normally once Redis is there.
#[test]
fn a_replica_started_without_redis_answers_503_until_it_is_there() {
    let Some(token) = Token::private_softhsm("the service suite runs on a private token") else {
        return;
    };
    let mut redis = Redis::start_with(Some("right-password"));
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(token.dir().join("wrong-password"), &wrong).unwrap();
    let extra = format!(
        "redis_url = \"{}\"\nredis_password_file = \"wrong-password\"\n",
        redis.url()
    );
    let refused = Server::start(&token, "ec-p256", &extra);
    let a = get(&refused.addr, &fresh_query());
    assert_eq!(
        (a.status, a.code.as_str()),
        (503, "ServiceUnavailable"),
        "{}",
        a.body
    );
    assert!(refused.get("/healthz").unwrap().starts_with("HTTP/1.1 503"));
    let log = refused.stop();
    assert!(log.contains("unreachable"), "{log}");
    assert!(!log.contains(&wrong), "the Redis password reached the log");

    redis.stop();
    std::fs::write(token.dir().join("right-password"), "right-password").unwrap();
    let extra = format!(
        "redis_url = \"{}\"\nredis_password_file = \"right-password\"\n",
        redis.url()
    );
    let server = Server::start(&token, "ec-p256", &extra);
    assert_eq!(code_of(&server, &fresh_query()), "ServiceUnavailable");
    server.wait_for_log("answered 503 ServiceUnavailable until it answers again");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while code_of(&server, &fresh_query()) != "OK" {
        assert!(
            Instant::now() < deadline,
            "never answered after Redis started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.stop();
    assert!(!log.contains("right-password"), "{log}");
}

/// Not a check: the p50 latency of pooled calls through one replica with
/// Redis against one in memory, in the same run, interleaved.
#[test]
fn cost_of_sharing_p50_pooled_latency() {
    let (Some(a), Some(b)) = (
        Token::private_softhsm("two pools, one per token"),
        Token::private_softhsm("two pools, one per token"),
    ) else {
        return;
    };
    const N: usize = 100;
    let redis = Redis::start();
    let pool = format!("[pool]\nsize = {N}\n");
    let limits = "rate_limit = 100000\n";
    let in_memory = Server::start_with(&a, "ec-p256", limits, &pool);
    let extra = format!("{limits}redis_url = \"{}\"\n", redis.url());
    let shared = Server::start_with(&b, "ec-p256", &extra, &pool);
    for s in [&in_memory, &shared] {
        crate::common::server::wait_for(s, "hsm_csr_pool_depth", N as f64);
    }
    let p50 = |mut t: Vec<Duration>| {
        t.sort();
        t[t.len() / 2].as_secs_f64() * 1e3
    };
    // The decision alone, in this process: what a call pays for sharing.
    let (memory, redis_limits) = (
        hsm_csr::service::limits::Limits::in_memory(100_000),
        hsm_csr::service::limits::Limits::Shared(shared_limits(&redis, 100_000)),
    );
    let (mut mem, mut red) = (Vec::new(), Vec::new());
    runtime().block_on(async {
        for i in 0..10 * N {
            let nonce = i.to_string();
            for (limits, times) in [(&memory, &mut mem), (&redis_limits, &mut red)] {
                let asked = Instant::now();
                assert_eq!(
                    limits
                        .admit("k", Some(&nonce), Duration::from_secs(60))
                        .await,
                    Ok(())
                );
                times.push(asked.elapsed());
            }
        }
    });
    let (mem, red) = (p50(mem), p50(red));
    println!(
        "cost of sharing: p50 of {} admission decisions: {mem:.3} ms in memory, {red:.3} ms with Redis: {:+.3} ms",
        10 * N,
        red - mem
    );
    // Pooled calls, then calls refused (InvalidValue.Malformed) right after
    // admission: the whole path without the token, where the round trip
    // to Redis is all that differs. Interleaved, so both see the same noise.
    for (what, calls, extra) in [
        ("pooled calls", N, &[][..]),
        ("calls without the token", 2 * N, &[("Country", "XXX")][..]),
    ] {
        let (mut mem, mut red) = (Vec::new(), Vec::new());
        for i in 0..calls {
            let mut pair = [(&in_memory, &mut mem), (&shared, &mut red)];
            if i % 2 == 1 {
                pair.reverse();
            }
            for (server, times) in pair {
                let mut params = vec![("CommonName", "a.example.com")];
                params.extend_from_slice(extra);
                let query = signed_query("MainKey", "s3cret", &params);
                let asked = Instant::now();
                let code = code_of(server, &query);
                times.push(asked.elapsed());
                assert!(code == "OK" || code == "InvalidValue.Malformed", "{code}");
            }
        }
        let (mem, red) = (p50(mem), p50(red));
        println!(
            "cost of sharing: p50 of {calls} {what}: {mem:.2} ms in memory, {red:.2} ms with Redis: {:+.2} ms",
            red - mem
        );
    }
    in_memory.stop();
    shared.stop();
}
