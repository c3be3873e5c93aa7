//! Three replicas share one rate limit and one nonce record through
//! Redis; and (not a check) the p50 cost of sharing against memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::{code_of, fresh_query, runtime, shared_limits};
use crate::common::Token;
use crate::common::redis::Redis;
use crate::common::rpc::{self, Answer, signed_query};
use crate::common::server::Server;

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
