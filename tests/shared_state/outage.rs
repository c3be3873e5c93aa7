//! `serve` while Redis is away: 503 (no key made, no replay accepted),
//! /healthz and /metrics say so, normal answers once it is back; a replica
//! started without Redis (or with a wrong password) answers 503 until it
//! is there. No Redis password reaches the log.

use std::time::{Duration, Instant};

use super::{code_of, fresh_query};
use crate::common::Token;
use crate::common::redis::Redis;
use crate::common::rpc::get;
use crate::common::server::{Server, metric};

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
    // Until its lease is renewed the replica makes no key: 503 before any
    // keygen, never a key made and then a 500.
    loop {
        let code = code_of(&server, &fresh_query());
        if code == "OK" {
            break;
        }
        assert_eq!(
            code, "ServiceUnavailable",
            "while the lease was not yet renewed"
        );
        assert!(
            Instant::now() < deadline,
            "never answered after Redis started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.stop();
    assert!(!log.contains("right-password"), "{log}");
}
