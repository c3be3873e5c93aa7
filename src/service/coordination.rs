//! What replicas sharing a token coordinate through Redis: who may take a
//! pool key, and which replicas still run (see
//! [`crate::backend::pkcs11::mark`]).
//!
//! - A pool claim sets `<prefix>:claim:<serial>:<pool id>` to the owner,
//!   if unset, for [`CLAIM_TTL`] ([`CLAIM`]): one replica wins, and only the
//!   winner relabels the key. The claim outlives the relabel by far; a
//!   replica that still holds the key in memory afterwards loses the claim,
//!   or (once it expired) finds the key no longer carries its pool ID. A
//!   claim its owner makes again is won again: a claim whose answer was
//!   lost (a timeout, a dropped connection) puts the key back in the pool
//!   unclaimed as far as the owner knows, and a plain `SET NX` would have it
//!   lose the key to its own claim, leaving an unassigned key that no pool
//!   lists and none adopts (the claim stands) until a restart.
//! - Each `serve` holds `<prefix>:lease:<owner>` with `SET PX`
//!   ([`LEASE_TTL`]), refreshed every [`LEASE_TTL`] / 5. Any replica may
//!   sweep the undelivered keys of an owner whose lease is gone, once this
//!   Redis has kept leases for two lease lifetimes (a Redis restarted
//!   empty knows no lease, of live replicas neither); an owner
//!   whose last refresh is older than [`DELIVER_WITHIN`] delivers nothing
//!   (its lease may be gone, its keys may be being swept).
//!
//! Fail closed: when Redis cannot be reached no claim succeeds (the call
//! makes its key on demand, so no key goes to two callers), no key is
//! adopted, and no owner is judged dead.
//!
//! These calls run on blocking threads (the token's), with the redis
//! crate's synchronous connection and short timeouts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::redis::key;
use crate::backend::pkcs11::id::{KIND_LEASED, Owner};
use crate::backend::pkcs11::mark::{Coordinator, Liveness};
use crate::error::{Error, Result};

/// How long a pool claim stands.
pub(crate) const CLAIM_TTL: Duration = Duration::from_secs(600);
/// How long a lease lives without a refresh.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(15);
/// A replica delivers only while its last lease refresh is this recent.
pub(crate) const DELIVER_WITHIN: Duration = Duration::from_secs(10);
/// The claim: sets KEYS[1] to ARGV[1] (the owner) for ARGV[2] ms when it
/// is unset; 1 when it is (now or already) the owner's, 0 when another's.
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return 1 end
if held then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";
/// Connect, read and write timeout of each Redis call.
const TIMEOUT: Duration = Duration::from_millis(500);
/// How long calls fail at once after one failed.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Pool claims and leases in Redis.
pub(crate) struct RedisCoordinator {
    client: redis::Client,
    prefix: String,
    owner: Owner,
    connection: Mutex<Option<redis::Connection>>,
    /// After a failed call, calls fail at once until then, rather than
    /// each waiting out a timeout while holding the connection.
    retry_at: Mutex<Option<Instant>>,
    /// When the lease was last refreshed.
    leased_at: Mutex<Option<Instant>>,
    /// [`CLAIM`].
    claim: redis::Script,
}

impl std::fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordinator")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: &redis::RedisError) -> Error {
    // The error names no URL or password: only what Redis said.
    Error::Token {
        op: "coordinating with other replicas through Redis",
        token: "Redis".to_owned(),
        detail: format!("Redis unreachable ({:?})", e.kind()).into(),
    }
}

impl RedisCoordinator {
    /// A coordinator for `client`'s Redis under `prefix`; this process
    /// marks its keys as a leased owner.
    pub(crate) fn new(client: redis::Client, prefix: &str) -> Self {
        RedisCoordinator {
            client,
            prefix: prefix.to_owned(),
            owner: Owner::this_process(KIND_LEASED),
            connection: Mutex::new(None),
            retry_at: Mutex::new(None),
            leased_at: Mutex::new(None),
            claim: redis::Script::new(CLAIM),
        }
    }

    /// Runs `f` on the shared connection, opening it when needed; a failed
    /// call drops it, the next call opens another.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let down = || Error::Token {
            op: "coordinating with other replicas through Redis",
            token: "Redis".to_owned(),
            detail: "Redis unreachable (retrying shortly)".into(),
        };
        let retry_at = *self.retry_at.lock().unwrap_or_else(|p| p.into_inner());
        if retry_at.is_some_and(|t| Instant::now() < t) {
            return Err(down());
        }
        let mut slot = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let failed = |e: &redis::RedisError| {
            *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + RETRY_AFTER);
            unavailable(e)
        };
        if slot.is_none() {
            let c = self
                .client
                .get_connection_with_timeout(TIMEOUT)
                .map_err(|e| failed(&e))?;
            c.set_read_timeout(Some(TIMEOUT))
                .and_then(|()| c.set_write_timeout(Some(TIMEOUT)))
                .map_err(|e| failed(&e))?;
            *slot = Some(c);
        }
        let Some(c) = slot.as_mut() else {
            return Err(down());
        };
        f(c).map_err(|e| {
            *slot = None;
            failed(&e)
        })
    }

    fn claim_key(&self, serial: &str, pool_id: &[u8]) -> String {
        key(&self.prefix, "claim", &[serial.as_bytes(), pool_id])
    }

    /// When (Redis `TIME`, seconds) this Redis first saw a lease: a Redis
    /// that restarted empty has no lease of anyone, live or not, until
    /// each replica renewed once.
    fn since_key(&self) -> String {
        key(&self.prefix, "leases-since", &[])
    }

    fn lease_key(&self, owner: &Owner) -> String {
        key(&self.prefix, "lease", &[&owner.bytes()])
    }

    /// Sets this process's lease once.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub(crate) fn refresh_lease(&self) -> Result<()> {
        let lease = self.lease_key(&self.owner);
        let ttl = u64::try_from(LEASE_TTL.as_millis()).unwrap_or(u64::MAX);
        let before = Instant::now();
        let since = self.since_key();
        self.with(|c| {
            let (now, _): (u64, u64) = redis::cmd("TIME").query(c)?;
            redis::pipe()
                .cmd("SET")
                .arg(&lease)
                .arg(1)
                .arg("PX")
                .arg(ttl)
                .ignore()
                .cmd("SET")
                .arg(&since)
                .arg(now)
                .arg("NX")
                .ignore()
                .query::<()>(c)
        })?;
        *self.leased_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(before);
        Ok(())
    }

    /// Keeps the lease alive until `stop`, on a thread of its own.
    pub(crate) fn keep_lease(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            let mut failing = false;
            while !stop.load(Ordering::Relaxed) {
                match me.refresh_lease() {
                    Ok(()) if failing => {
                        log::info!("Redis lease renewed: this replica delivers keys again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        log::warn!(
                            "cannot renew this replica's lease in Redis: {e}; keys are not \
                             delivered once it may have lapsed"
                        );
                        failing = true;
                    }
                    Err(_) => {}
                }
                let next = Instant::now() + LEASE_TTL / 5;
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    }
}

impl Coordinator for RedisCoordinator {
    fn owner(&self) -> Owner {
        self.owner
    }

    fn claim(&self, serial: &str, pool_id: &[u8]) -> Result<bool> {
        let claim = self.claim_key(serial, pool_id);
        let ttl = u64::try_from(CLAIM_TTL.as_millis()).unwrap_or(u64::MAX);
        let won: i64 = self.with(|c| {
            self.claim
                .key(&claim)
                .arg(&self.owner.bytes()[..])
                .arg(ttl)
                .invoke(c)
        })?;
        Ok(won == 1)
    }

    fn claimed(&self, serial: &str, pool_id: &[u8]) -> Result<bool> {
        let claim = self.claim_key(serial, pool_id);
        let n: i64 = self.with(|c| redis::cmd("EXISTS").arg(&claim).query(c))?;
        Ok(n > 0)
    }

    fn lease_alive(&self, owner: &Owner) -> Liveness {
        let (lease, since) = (self.lease_key(owner), self.since_key());
        let answer = self.with(|c| {
            redis::pipe()
                .cmd("EXISTS")
                .arg(&lease)
                .cmd("GET")
                .arg(&since)
                .cmd("TIME")
                .query::<(i64, Option<u64>, (u64, u64))>(c)
        });
        match answer {
            Ok((n, _, _)) if n > 0 => Liveness::Alive,
            // Gone only if every live replica has had two renewals' time
            // to put its lease back since this Redis started keeping them.
            Ok((_, Some(since), (now, _)))
                if now.saturating_sub(since) > 2 * LEASE_TTL.as_secs() =>
            {
                Liveness::Dead
            }
            Ok(_) | Err(_) => Liveness::Unknown,
        }
    }

    fn may_deliver(&self) -> bool {
        self.leased_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < DELIVER_WITHIN)
    }

    fn is_shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A private redis-server on 127.0.0.1, killed when dropped.
    struct Server(Child, u16);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn server() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the redis-server package) to start");
        let server = Server(child, port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A claim whose answer was lost (recorded in Redis, reported as an
    /// error) puts the key back in the pool; taking it again must win,
    /// or the key stays unassigned on the token, in no pool, claimed.
    #[test]
    #[cfg_attr(
        hsm_csr_no_redis_server,
        ignore = "needs redis-server on the PATH (apt install redis-server; scripts/test.sh installs it)"
    )]
    fn a_claim_made_again_by_its_owner_is_won_again_and_only_by_it() {
        let redis = server();
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.1)).unwrap();
        let mine = RedisCoordinator::new(client.clone(), "t");
        let mut theirs = RedisCoordinator::new(client, "t");
        theirs.owner.pid ^= 1;
        let pool_id = b"hsm-pool0123456789abcdef";
        assert!(!mine.claimed("serial", pool_id).unwrap());
        assert!(
            mine.claim("serial", pool_id).unwrap(),
            "the first claim wins"
        );
        assert!(mine.claimed("serial", pool_id).unwrap());
        assert!(
            mine.claim("serial", pool_id).unwrap(),
            "its owner's second claim (the first one's answer lost) wins again"
        );
        assert!(
            !theirs.claim("serial", pool_id).unwrap(),
            "another replica's claim loses"
        );
        assert!(
            theirs.claim("serial", b"hsm-poolfedcba9876543210").unwrap(),
            "another key is free"
        );
        assert!(!mine.claim("serial", b"hsm-poolfedcba9876543210").unwrap());
        assert!(mine.claim("other serial", pool_id).unwrap(), "per token");
    }
}
