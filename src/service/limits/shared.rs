//! The limits every replica shares, in Redis: one Lua script (run with
//! EVALSHA) makes the rate-limit decision and records the nonce in one
//! round trip, atomically, on Redis' own clock (`TIME`), so that the
//! replicas' clocks do not matter.
//!
//! Keys (see [`crate::service::redis::key`]): `PREFIX:rate:HEX(access key)`,
//! a sorted set of the calls admitted in the last second, scored by their
//! time in microseconds, each member unique; and
//! `PREFIX:nonce:HEX(access key):HEX(SHA-256(nonce))`, set with NX and a
//! lifetime. The access key is one of the configured ones (the signature
//! was checked against its secret); the nonce is hashed, since a signed
//! request may carry one of up to the body or header limit (tens of KB),
//! and Redis holds up to `rate_limit` × lifetime of them per access key.
//!
//! Fail closed: when Redis does not answer within [`CALL_BUDGET`], or
//! answers with an error, the call is refused ([`Refusal::Unreachable`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Refusal;
use crate::service::metrics::SharedStateMetrics;
use crate::service::redis::key;

/// Checks and counts a call against its access key's window, then records
/// its nonce. Returns `{1, 1}` admitted, `{1, 0}` admitted but the nonce
/// was seen, `{0, microseconds to wait}` throttled (not counted, nonce not
/// recorded), as the in-memory [`super::RateLimit`] and [`super::Nonces`].
///
/// KEYS[1] the window, KEYS[2] (optional) the nonce;
/// ARGV[1] the limit, ARGV[2] this call's member, ARGV[3] the nonce's
/// lifetime in milliseconds.
const ADMIT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  if not oldest then return {0, 1000000} end
  return {0, 1000000 - (now - tonumber(oldest))}
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 1000)
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  return {1, 0}
end
return {1, 1}
";

/// How long one connection attempt may take, and one reply.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The most a call waits on Redis in all: a connection attempt, the
/// script, and loading it once more after Redis restarted empty.
pub(super) const CALL_BUDGET: Duration = Duration::from_millis(1000);

/// How often Redis is checked while it answers, and while it does not.
const WATCH_UP: Duration = Duration::from_secs(1);
const WATCH_DOWN: Duration = Duration::from_millis(250);

const UNKNOWN: u8 = 0;
const REACHABLE: u8 = 1;
const UNREACHABLE: u8 = 2;

/// The rate limit and nonce record in Redis.
pub struct SharedLimits {
    client: redis::Client,
    /// Made on first use (it needs the async runtime), and made afresh
    /// when Redis stops answering.
    manager: Mutex<Option<ConnectionManager>>,
    prefix: String,
    limit: u32,
    script: redis::Script,
    state: AtomicU8,
    metrics: SharedStateMetrics,
}

impl std::fmt::Debug for SharedLimits {
    // The client holds the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("prefix", &self.prefix)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// `limit` calls per second per access key, under the key `prefix`, in
    /// the Redis `client` names. Nothing is connected yet.
    pub fn new(
        client: redis::Client,
        prefix: &str,
        limit: u32,
        metrics: SharedStateMetrics,
    ) -> SharedLimits {
        SharedLimits {
            client,
            manager: Mutex::new(None),
            prefix: prefix.to_owned(),
            limit,
            script: redis::Script::new(ADMIT),
            state: AtomicU8::new(UNKNOWN),
            metrics,
        }
    }

    /// See [`super::Limits::admit`].
    ///
    /// # Errors
    /// The [`Refusal`].
    pub async fn admit(
        &self,
        access_key: &str,
        nonce: Option<&str>,
        lifetime: Duration,
    ) -> Result<(), Refusal> {
        let mut call = self.script.prepare_invoke();
        call.key(key(&self.prefix, "rate", &[access_key.as_bytes()]));
        if let Some(nonce) = nonce {
            let digest = ring::digest::digest(&ring::digest::SHA256, nonce.as_bytes());
            call.key(key(
                &self.prefix,
                "nonce",
                &[access_key.as_bytes(), digest.as_ref()],
            ));
        }
        call.arg(self.limit)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(
                u64::try_from(lifetime.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        let reply = match self.connection() {
            Ok(mut conn) => {
                tokio::time::timeout(CALL_BUDGET, call.invoke_async::<Vec<i64>>(&mut conn)).await
            }
            Err(e) => Ok(Err(e)),
        };
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(self.failed(&e)),
            Err(_) => return Err(self.failed(&"no answer in time")),
        };
        self.answered();
        match reply[..] {
            [1, 1] => Ok(()),
            [1, 0] => Err(Refusal::NonceUsed),
            // At most the window, whatever Redis' clock did.
            [0, wait] => Err(Refusal::Throttled(
                Duration::from_micros(u64::try_from(wait).unwrap_or(0)).min(Duration::from_secs(1)),
            )),
            _ => Err(self.failed(&format!("unexpected answer {reply:?}"))),
        }
    }

    /// Whether Redis answers PING now (within `CALL_BUDGET`).
    pub async fn ping(&self) -> bool {
        let pong = match self.connection() {
            Ok(mut conn) => {
                let ping = redis::cmd("PING");
                tokio::time::timeout(CALL_BUDGET, ping.query_async::<String>(&mut conn)).await
            }
            Err(e) => Ok(Err(e)),
        };
        match pong {
            Ok(Ok(_)) => {
                self.answered();
                true
            }
            Ok(Err(e)) => {
                self.failed(&e);
                false
            }
            Err(_) => {
                self.failed(&"no answer in time");
                false
            }
        }
    }

    /// Checks Redis every second while it answers and every 250 ms while
    /// it does not; each failed check starts a fresh connection, so that
    /// calls find one ready as soon as Redis is back. Never returns.
    pub async fn watch(&self) {
        loop {
            let up = self.ping().await;
            if !up {
                *self.manager.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            tokio::time::sleep(if up { WATCH_UP } else { WATCH_DOWN }).await;
        }
    }

    fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut held = self.manager.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(manager) = &*held {
            return Ok(manager.clone());
        }
        // One attempt per (re)connection: while Redis is away, each call
        // and each check fails fast and starts the next attempt.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        *held = Some(manager.clone());
        Ok(manager)
    }

    fn answered(&self) {
        self.metrics.reachable.set(1);
        match self.state.swap(REACHABLE, Ordering::Relaxed) {
            UNKNOWN => log::info!(
                "shared state (Redis, [service] redis_url) reachable: rate limits and nonces hold across every replica using it"
            ),
            UNREACHABLE => log::warn!(
                "shared state (Redis, [service] redis_url) reachable again: calls are answered normally"
            ),
            _ => {}
        }
    }

    /// Counts and logs (once per outage) a failed operation; the refusal.
    fn failed(&self, e: &dyn std::fmt::Display) -> Refusal {
        self.metrics.reachable.set(0);
        self.metrics.errors.inc();
        if self.state.swap(UNREACHABLE, Ordering::Relaxed) != UNREACHABLE {
            // The error is Redis' (or the connection's): it never holds the
            // password, which is sent only in AUTH.
            let e = e.to_string();
            log::error!(
                "shared state (Redis, [service] redis_url) unreachable ({}): calls are answered 503 ServiceUnavailable until it answers again; checking every {} ms",
                e.escape_debug(),
                WATCH_DOWN.as_millis()
            );
        }
        Refusal::Unreachable
    }
}
