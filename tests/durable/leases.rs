//! Marks of owners on other hosts: judged by their lease in Redis once
//! Redis has kept leases long enough, never without a lease.

use hsm_csr::backend::pkcs11::id::{KIND_LEASED, KIND_PROCESS, Owner};

use super::{pairs, plant};
use crate::common::Token;
use crate::common::redis::Redis;
use crate::common::server::Server;

/// Owners on another host (a host hash not ours): a leased one is judged by
/// its lease in Redis, once Redis has kept leases long enough that every
/// live replica renewed its own; one without a lease is never judged.
#[test]
fn owners_on_other_hosts_are_judged_by_their_redis_lease_only() {
    let token = Token::new();
    let redis = Redis::start();
    let me = Owner::this_process(KIND_PROCESS);
    let elsewhere = |kind, pid| Owner {
        kind,
        host: [!me.host[0], me.host[1], me.host[2], me.host[3]],
        pid,
        start: [1, 2, 3, 4],
    };
    let (leased, lapsed, unleased) = (
        elsewhere(KIND_LEASED, 10),
        elsewhere(KIND_LEASED, 11),
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
    let server = Server::start(&token, token.ec_or_rsa(), &extra);
    let log = server.stop();
    assert_eq!(on_token(&token), [true, true, true], "{log}");
    assert!(log.contains("not yet delivered by pid 12 on host"), "{log}");
    // Leases kept for long enough: the lapsed owner's key goes.
    let time = redis.cli(&["TIME"]);
    let now: u64 = time.lines().next().unwrap().trim().parse().unwrap();
    let long_ago = (now - 120).to_string();
    redis.cli(&["SET", "hsm-csr:leases-since", &long_ago]);
    let server = Server::start(&token, token.ec_or_rsa(), &extra);
    let log = server.stop();
    assert_eq!(on_token(&token), [true, false, true], "{log}");
}
