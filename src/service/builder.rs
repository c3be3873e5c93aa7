//! The service assembled from a configuration, for `hsm-csr serve` and for
//! library users who run one themselves:
//!
//! ```text
//! ServiceBuilder::new(&config, listen)?   every check that needs no token: the address,
//!                                         key options, access keys and their secrets,
//!                                         Redis URL, TLS files; the audit log opened
//!     .serve(opened_tokens)               coordinator, session pools, key pools, the HTTP
//!                                         service; runs until SIGINT/SIGTERM, then closes all
//! ```
//!
//! Opening the tokens (finding them, reading the PIN, logging in) is the
//! caller's: the CLI does it from its flags and the config, with retries
//! and prompts that belong to a command line. The order keeps the promise
//! `serve` makes: the whole configuration, secrets included, is checked
//! before a token is opened, so a mistake there costs no login.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::coordination::RedisCoordinator;
use super::tokens::NamedSessions;
use super::{AccessKeys, Service};
use crate::audit::AuditLog;
use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::pkcs11::pool::KeyPool;
use crate::config::{Config, ServiceConfig};
use crate::error::{Error, Result};
use crate::issue::ValidKeyOptions;
use crate::session_pool::{Reconnect, SessionPool};

/// One logged-in token, as the caller opened it.
pub struct OpenedToken {
    /// Its first session, logged in.
    pub backend: Pkcs11Backend,
    /// How to open it again after it went away (module, selector, PIN).
    pub reconnect: Reconnect,
    /// Its name in `/healthz` and `/metrics`.
    pub name: String,
}

/// A checked configuration, ready to serve once given its tokens.
pub struct ServiceBuilder {
    config: Config,
    service: ServiceConfig,
    key_options: ValidKeyOptions,
    keys: AccessKeys,
    shared_state: Option<::redis::Client>,
    audit: Option<AuditLog>,
}

impl ServiceBuilder {
    /// Checks everything in `config` that needs no token, and opens the
    /// audit log. `listen`, when given, is the address (an IP address and
    /// port) to listen on instead of `[service] listen`.
    ///
    /// # Errors
    /// `Config.Invalid` for a bad `listen`, bad key options, access keys or
    /// secrets, a bad Redis URL or unusable TLS files; `Internal.Error` for
    /// an audit log that cannot be opened.
    pub fn new(config: &Config, listen: Option<&str>) -> Result<ServiceBuilder> {
        let mut service = config.service.clone();
        if let Some(addr) = listen {
            addr.parse::<std::net::SocketAddr>().map_err(|_| {
                Error::Config(format!(
                    "--listen {addr:?} must be an IP address and port, such as 127.0.0.1:8080 or [::1]:8080."
                ))
            })?;
            addr.clone_into(&mut service.listen);
        }
        let key_options = config.key.options().validate()?;
        let keys = AccessKeys::load(&service.access_keys, service.max_certificates_per_key)?;
        let shared_state = super::redis::client(&service)?;
        if let (Some(cert), Some(key)) = (&service.tls_cert, &service.tls_key) {
            super::tls::acceptor(cert, key)?;
        }
        Ok(ServiceBuilder {
            audit: config.audit.open()?,
            config: config.clone(),
            service,
            key_options,
            keys,
            shared_state,
        })
    }

    /// Serves `tokens` until SIGINT or SIGTERM, then closes their sessions.
    ///
    /// # Errors
    /// `Config.Invalid` when two entries are one token, a pool's key type
    /// differs from `[key]`'s, or the address cannot be bound; token errors
    /// while the sessions and pools are set up.
    pub fn serve(self, tokens: Vec<OpenedToken>) -> Result<()> {
        check_distinct(&tokens)?;
        // With Redis, every replica holds a lease there, and pool claims and
        // sweeps of keys left undelivered by dead replicas go through it.
        let lease = self.shared_state.as_ref().map(|client| {
            Lease::start(RedisCoordinator::new(
                client.clone(),
                &self.service.redis_key_prefix,
            ))
        });
        let pools = match self.session_pools(tokens, lease.as_ref()) {
            Ok(pools) => pools,
            Err(e) => {
                if let Some(lease) = lease {
                    lease.stop();
                }
                return Err(e);
            }
        };
        let sessions: Vec<Arc<SessionPool>> =
            pools.iter().map(|p| Arc::clone(&p.sessions)).collect();
        let mut service = Service::with_tokens(
            pools,
            self.service,
            self.keys,
            self.config.subject.defaults.clone(),
        )
        .with_audit(self.audit);
        if let Some(client) = self.shared_state {
            service = service.with_shared_state(client);
        }
        let served = run(Arc::new(service));
        for pool in sessions {
            pool.close();
        }
        if let Some(lease) = lease {
            lease.stop();
        }
        served
    }

    /// One session pool per token, `workers` spread over them; every pool
    /// made before any starts filling, so that a failure stops the start
    /// with nothing running.
    fn session_pools(
        &self,
        tokens: Vec<OpenedToken>,
        lease: Option<&Lease>,
    ) -> Result<Vec<NamedSessions<SessionPool>>> {
        let workers = match self.service.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };
        let n = tokens.len();
        let mut pools = Vec::with_capacity(n);
        for (i, token) in tokens.into_iter().enumerate() {
            let mut backend = token.backend;
            // Objects on each token show in /metrics, with or without max_objects.
            backend.count_objects_for_metrics()?;
            if let Some(lease) = lease {
                backend.set_coordinator(Arc::clone(&lease.coordinator) as _);
            }
            let mut sessions = SessionPool::open(
                backend,
                share(workers, n, i),
                token.reconnect,
                self.key_options.clone(),
                key_pool(&self.config, &self.key_options)?,
            )?;
            sessions.keep_inventory(&self.config.retention, self.audit.clone());
            pools.push(NamedSessions {
                sessions: Arc::new(sessions),
                name: token.name,
            });
        }
        for pool in &pools {
            pool.sessions.start_key_pool()?;
        }
        Ok(pools)
    }
}

/// Refuses two entries that reach the same token (label and serial).
fn check_distinct(tokens: &[OpenedToken]) -> Result<()> {
    let identity = |t: &OpenedToken| {
        (
            t.backend.token_label().to_owned(),
            t.backend.token_serial().to_owned(),
        )
    };
    for (i, token) in tokens.iter().enumerate() {
        if let Some(earlier) = tokens
            .iter()
            .take(i)
            .position(|t| identity(t) == identity(token))
        {
            let (label, serial) = identity(token);
            return Err(Error::Config(format!(
                "[[tokens]] number {} and number {} reach the same token (label {label:?}, serial {serial:?}): list each token once.",
                earlier + 1,
                i + 1,
            )));
        }
    }
    Ok(())
}

/// Runs `service` on a runtime of its own until it stops.
fn run(service: Arc<Service>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("tokio runtime: {e}")))?;
    let served = runtime.block_on(service.serve());
    // Cancels the handlers cut off by the shutdown deadline and waits for
    // their workers, which remove the key pairs nobody received.
    drop(runtime);
    served
}

/// This replica's Redis lease, renewed by a thread until stopped.
struct Lease {
    coordinator: Arc<RedisCoordinator>,
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl Lease {
    fn start(coordinator: RedisCoordinator) -> Lease {
        let coordinator = Arc::new(coordinator);
        if let Err(e) = coordinator.refresh_lease() {
            log::warn!("{e}: pooled keys are not shared and no key is delivered until it answers");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = coordinator.keep_lease(Arc::clone(&stop));
        Lease {
            coordinator,
            thread,
            stop,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Token `i`'s share of `workers` over `n` tokens: as even as it gets, at
/// least one each.
fn share(workers: usize, n: usize, i: usize) -> usize {
    (workers / n + usize::from(i < workers % n)).max(1)
}

/// A key pool for one token, when `[pool] size` asks for one.
fn key_pool(config: &Config, key_options: &ValidKeyOptions) -> Result<Option<Arc<KeyPool>>> {
    if config.pool.size == 0 {
        return Ok(None);
    }
    let pool_type = match &config.pool.key_type {
        Some(t) => t.with_bits(config.key.bits),
        None => key_options.key_type(),
    };
    if pool_type != key_options.key_type() {
        return Err(Error::Config(format!(
            "[pool] key_type {pool_type} differs from [key] type {}: its keys would never be used.",
            key_options.key_type()
        )));
    }
    Ok(Some(Arc::new(KeyPool::new(
        config.pool.size,
        pool_type,
        format!("{}pool:unassigned", key_options.label_prefix()),
    ))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn workers_are_spread_evenly_at_least_one_each() {
        let shares = |w, n| (0..n).map(|i| super::share(w, n, i)).collect::<Vec<_>>();
        assert_eq!(shares(4, 2), [2, 2]);
        assert_eq!(shares(5, 2), [3, 2]);
        assert_eq!(shares(1, 3), [1, 1, 1]);
        assert_eq!(shares(8, 1), [8]);
    }
}
