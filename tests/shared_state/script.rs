//! The Lua script behind `SharedLimits`, against a real Redis: the
//! in-memory limiter's meaning, one round trip per call, keys callers
//! cannot shape or grow, and failing closed while Redis is away.

use std::time::{Duration, Instant};

use hsm_csr::service::limits::Refusal;

use super::{runtime, shared_limits};
use crate::common::redis::Redis;

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
