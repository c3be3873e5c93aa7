//! Replicas that share their rate limit and nonces through Redis,
//! against a real `redis-server` and real `serve`
//! processes, with short counts: the scenarios of `scripts/cluster.sh`.
//!
//! This file holds the helpers; [`script`] checks the Lua script through
//! `SharedLimits` alone, [`replicas`] several `serve` sharing one limit and
//! one nonce record (and what sharing costs), [`outage`] `serve` while
//! Redis is away.

use hsm_csr::service::limits::SharedLimits;
use hsm_csr::service::metrics::SharedStateMetrics;

use crate::common::redis::Redis;
use crate::common::rpc::{get, signed_query};
use crate::common::server::Server;

mod outage;
mod replicas;
mod script;

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

fn code_of(server: &Server, query: &str) -> String {
    get(&server.addr, query).code
}
