//! `hsm-csr serve`: the cloud's CreateCdnCertificateSigningRequest and
//! CreateDcdnCertificateSigningRequest over its RPC protocol, so that the
//! official SDKs work against it with only the endpoint changed.
//!
//! The HTTP layer only translates: authentication ([`auth`]), replay and
//! flow control ([`limits`]), the wire format ([`api`]); the CSR itself is
//! [`crate::prepare_csr`], unchanged. PKCS#11 calls run on blocking threads,
//! never on the async runtime. A key pair is kept only when its response is
//! handed to the connection; a request that times out has its key removed.

pub mod api;
pub mod auth;
pub mod config;
pub mod deadline;
mod handler;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod signature;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use secrecy::ExposeSecret;

use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::pkcs11::inventory::report_unchecked;
use crate::backend::pkcs11::pool::KeyPool;
pub use crate::config::{AccessKeyConfig, ServiceConfig};
use crate::error::{Error, Result};
use crate::issue::ValidKeyOptions;
use crate::request::SubjectDefaults;
use config::AccessKey;
pub use config::AccessKeys;

/// Logged-in sessions, each used by one request at a time.
struct Workers {
    idle: Mutex<Vec<Pkcs11Backend>>,
    available: Arc<tokio::sync::Semaphore>,
    total: usize,
}

/// Everything a request handler needs.
pub struct Service {
    workers: Workers,
    keys: HashMap<String, AccessKey>,
    key_options: ValidKeyOptions,
    defaults: SubjectDefaults,
    config: ServiceConfig,
    nonces: limits::Nonces,
    rate: limits::RateLimit,
    pool: Option<Arc<KeyPool>>,
    metrics: metrics::Metrics,
    token: Reconnect,
    /// Set when a session stops answering; cleared once all sessions have
    /// been opened again.
    broken: AtomicBool,
    refiller: Mutex<Option<(std::thread::JoinHandle<()>, Arc<AtomicBool>)>>,
    /// CKA_IDs of key pairs that failed calls may have left on the token,
    /// to destroy once a session answers again.
    orphans: Arc<Orphans>,
}

/// CKA_IDs of key pairs that failed calls may have left on the token and
/// no session could check yet (see [`Pkcs11Backend::sweep`]).
#[derive(Debug, Default)]
struct Orphans(Mutex<Vec<Vec<u8>>>);

impl Orphans {
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn keep(&self, mut ids: Vec<Vec<u8>>) {
        if !ids.is_empty() {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut ids);
        }
    }
}

/// Destroys what failed calls on `backend` may have left on the token,
/// together with what earlier sweeps could not reach (`orphans`); what
/// this session cannot reach either goes back to `orphans`, for the next
/// request or the reconnect.
fn settle(backend: &mut Pkcs11Backend, orphans: &Orphans) {
    backend.adopt_ids(orphans.take());
    orphans.keep(backend.settle());
}

/// What it takes to open the token again after it went away: module,
/// selector, and the PIN, kept (as a zeroizing secret) for the new login.
pub struct Reconnect {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// Which token.
    pub selector: crate::backend::pkcs11::TokenSelector,
    /// The user PIN, or None for a token that needs no login or takes it on
    /// its own PIN pad.
    pub pin: Option<cryptoki::types::AuthPin>,
}

/// Keeps `pool` at its target on a session of its own, until `stop`.
fn spawn_refiller(
    pool: Arc<KeyPool>,
    mut backend: Pkcs11Backend,
    signature: crate::SignatureAlgorithm,
    stop: Arc<AtomicBool>,
    orphans: Arc<Orphans>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if !pool.wants_more() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            match pool.refill(&mut backend, signature) {
                Ok(()) => {}
                Err(e) => {
                    log::warn!("pool refill failed: {} {e}", e.code());
                    settle(&mut backend, &orphans);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        orphans.keep(backend.take_unsettled());
    })
}

impl Service {
    /// Takes over the logged-in `backends`, one per worker.
    pub fn new(
        backends: Vec<Pkcs11Backend>,
        config: ServiceConfig,
        keys: AccessKeys,
        key_options: ValidKeyOptions,
        defaults: SubjectDefaults,
        pool: Option<Arc<KeyPool>>,
        token: Reconnect,
    ) -> Service {
        let keys = keys.0;
        Service {
            workers: Workers {
                available: Arc::new(tokio::sync::Semaphore::new(backends.len())),
                total: backends.len(),
                idle: Mutex::new(backends),
            },
            keys,
            key_options,
            defaults,
            rate: limits::RateLimit::new(config.rate_limit),
            config,
            nonces: limits::Nonces::default(),
            pool,
            metrics: metrics::Metrics::default(),
            token,
            broken: AtomicBool::new(false),
            refiller: Mutex::new(None),
            orphans: Arc::default(),
        }
    }

    /// The router: the RPC endpoint at `/`, and `/healthz`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(handler::healthz))
            .route("/metrics", get(handler::metrics_text))
            .route("/", any(handler::rpc))
            .layer(axum::middleware::map_response(handler::with_request_id))
            .with_state(self)
    }

    /// Serves on the configured address until SIGINT or SIGTERM, over
    /// HTTPS when `tls_cert` and `tls_key` are set.
    ///
    /// # Errors
    /// `Config.Invalid` when the address cannot be bound or the TLS files
    /// cannot be used.
    pub async fn serve(self: Arc<Self>) -> Result<()> {
        tokio::spawn(Arc::clone(&self).reconnect_loop());
        // The workers' sessions and the pool refiller's.
        let sessions = self.workers.total + usize::from(self.pool.is_some());
        let router = Arc::clone(&self).router();
        if server::run(&self.config, sessions, router).await? == server::Stopped::DeadlinePassed {
            // Returning drops the runtime, which cancels the handlers: their
            // workers see the response refused and remove the key pairs.
            log::warn!(
                "shutdown deadline passed with {} session(s) busy: those requests are cut off and their key pairs removed",
                self.workers.total - self.workers.available.available_permits()
            );
        }
        Ok(())
    }

    /// Adopts the unassigned pool keys on the token and starts the
    /// refiller on a session of its own. Does nothing without a pool.
    ///
    /// # Errors
    /// A token error when the keys cannot be listed or the session opened.
    pub fn start_pool(&self) -> Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let session = {
            let idle = self.workers.idle.lock().unwrap_or_else(|p| p.into_inner());
            let first = idle
                .first()
                .ok_or_else(|| Error::Internal("no session to refill the pool from".into()))?;
            let adopted = pool.adopt_existing(first)?;
            log::info!(
                "key pool: {adopted} unassigned key(s) adopted from the token, target {}",
                pool.target
            );
            first.another_session()?
        };
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_refiller(
            Arc::clone(pool),
            session,
            self.key_options.signature(),
            Arc::clone(&stop),
            Arc::clone(&self.orphans),
        );
        *self.refiller.lock().unwrap_or_else(|p| p.into_inner()) = Some((handle, stop));
        Ok(())
    }

    /// Stops the refiller, if any, and waits for it.
    pub fn stop_pool(&self) {
        if let Some((handle, stop)) = self
            .refiller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }

    /// Drops every session (so the module is finalized), opens the token
    /// again, logs in and refills the worker list. Runs with every worker
    /// permit held, so no request is using a session.
    fn reopen(&self) -> Result<()> {
        self.stop_pool();
        if let Some(pool) = &self.pool {
            pool.clear();
        }
        let total = self.workers.total;
        let mut idle = self.workers.idle.lock().unwrap_or_else(|p| p.into_inner());
        for mut old in idle.drain(..) {
            self.orphans.keep(old.take_unsettled());
        }
        let mut first = Pkcs11Backend::open(&self.token.module, &self.token.selector)?;
        if first.login_required() {
            first.login(self.token.pin.as_ref())?;
        }
        // Not fatal: what this sweep cannot reach is tried again later.
        settle(&mut first, &self.orphans);
        let mut fresh = vec![first];
        for _ in 1..total {
            fresh.push(fresh[0].another_session()?);
        }
        *idle = fresh;
        drop(idle);
        self.start_pool()
    }

    /// Every half second while the token is unreachable, tries to open it again.
    async fn reconnect_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !self.broken.load(Ordering::Relaxed) {
                continue;
            }
            let Ok(permits) = Arc::clone(&self.workers.available)
                .acquire_many_owned(self.workers.total as u32)
                .await
            else {
                return;
            };
            let svc = Arc::clone(&self);
            let reopened = tokio::task::spawn_blocking(move || svc.reopen()).await;
            match reopened {
                Ok(Ok(())) => {
                    self.broken.store(false, Ordering::Relaxed);
                    log::warn!(
                        "token {} is back: sessions reopened",
                        self.token.selector.describe()
                    );
                }
                Ok(Err(
                    e @ (Error::PinIncorrect { .. }
                    | Error::PinLocked { .. }
                    | Error::PinNotInitialized { .. }),
                )) => {
                    // A PIN verdict: retrying would walk the token into lockout.
                    log::error!(
                        "cannot log in again ({} {e}); not retrying. Restart the service with the right PIN.",
                        e.code()
                    );
                    drop(permits);
                    return;
                }
                Ok(Err(e)) => log::warn!("token still unreachable: {} {e}", e.code()),
                Err(e) => log::error!("reconnect task failed: {e}"),
            }
            drop(permits);
        }
    }

    /// At exit: one last try to remove what failed calls may have left on
    /// the token; names the CKA_IDs that remain, for the operator.
    pub fn settle_orphans(&self) {
        let mut idle = self.workers.idle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(backend) = idle.first_mut() {
            settle(backend, &self.orphans);
        }
        report_unchecked(&self.orphans.take(), "");
    }

    /// A new session in place of one the token lost. It must find the
    /// login still in place: logging in again is left to [`Self::reopen`],
    /// which tries the PIN once for all sessions, never once per request.
    fn fresh_session(&self, old: &mut Pkcs11Backend) -> Result<Pkcs11Backend> {
        let mut fresh = old.another_session()?;
        if fresh.login_required() && !fresh.logged_in()? {
            return Err(Error::Token {
                op: "opening a new session",
                token: fresh.token_label().to_owned(),
                detail: "the token no longer has our login; reconnecting".into(),
            });
        }
        fresh.adopt_ids(old.take_unsettled());
        Ok(fresh)
    }

    fn secret_of(&self, id: &str) -> Option<&str> {
        self.keys.get(id).map(|k| k.secret.expose_secret())
    }
}
