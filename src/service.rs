//! `hsm-csr serve`: the cloud's CreateCdnCertificateSigningRequest and
//! CreateDcdnCertificateSigningRequest over its RPC protocol, so that the
//! official SDKs work against it with only the endpoint changed.
//!
//! The HTTP layer only translates: authentication ([`auth`]), replay and
//! flow control ([`limits`]), the wire format ([`api`]); the CSR itself is
//! [`crate::prepare_csr`], unchanged, made on [`Sessions`] (the token's
//! [`SessionPool`]). PKCS#11 calls run on blocking threads, never on the
//! async runtime. A key pair is kept only when its response is handed to
//! the connection; a request that times out has its key removed.

pub mod api;
pub mod auth;
pub mod config;
pub mod coordination;
pub mod deadline;
mod handler;
pub mod limits;
pub mod metrics;
pub mod redis;
pub mod request_signing;
pub mod server;
pub mod sessions;
mod shedding;
pub mod tls;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use secrecy::ExposeSecret;

use crate::backend::pkcs11::session_pool::SessionPool;
pub use crate::config::{AccessKeyConfig, ServiceConfig};
use crate::error::{Error, Result};
use crate::request::SubjectDefaults;
use config::AccessKey;
pub use config::AccessKeys;
pub use sessions::Sessions;

/// Everything a request handler needs.
pub struct Service<S: Sessions = SessionPool> {
    sessions: Arc<S>,
    /// One permit per session: a request holds one while it is on the token.
    available: Arc<tokio::sync::Semaphore>,
    keys: HashMap<String, AccessKey>,
    defaults: SubjectDefaults,
    config: ServiceConfig,
    nonces: limits::Nonces,
    rate: limits::RateLimit,
    metrics: metrics::Metrics,
}

impl<S: Sessions> Service<S> {
    /// Answers calls from `keys` with CSRs made on `sessions`.
    pub fn new(
        sessions: Arc<S>,
        config: ServiceConfig,
        keys: AccessKeys,
        defaults: SubjectDefaults,
    ) -> Service<S> {
        Service {
            available: Arc::new(tokio::sync::Semaphore::new(sessions.total())),
            sessions,
            keys: keys.0,
            defaults,
            rate: limits::RateLimit::new(config.rate_limit),
            config,
            nonces: limits::Nonces::default(),
            metrics: metrics::Metrics::default(),
        }
    }

    /// The router: the RPC endpoint at `/`, `/healthz` and `/metrics`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(handler::healthz::<S>))
            .route("/metrics", get(handler::metrics_text::<S>))
            .route("/", any(handler::rpc::<S>))
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
        let sessions = self.sessions.sessions_open();
        let router = Arc::clone(&self).router();
        if server::run(&self.config, sessions, router).await? == server::Stopped::DeadlinePassed {
            // Returning drops the runtime, which cancels the handlers: their
            // workers see the response refused and remove the key pairs.
            log::warn!(
                "shutdown deadline passed with {} session(s) busy: those requests are cut off and their key pairs removed",
                self.busy()
            );
        }
        Ok(())
    }

    /// Sessions in use by a request now.
    fn busy(&self) -> usize {
        self.sessions.total() - self.available.available_permits()
    }

    /// Every half second while the token is unreachable, tries to open it
    /// again, holding every session permit so that no request is using one.
    async fn reconnect_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !self.sessions.is_broken() {
                continue;
            }
            let Ok(permits) = Arc::clone(&self.available)
                .acquire_many_owned(self.sessions.total() as u32)
                .await
            else {
                return;
            };
            let sessions = Arc::clone(&self.sessions);
            let reopened = tokio::task::spawn_blocking(move || sessions.reopen()).await;
            match reopened {
                Ok(Ok(())) => {
                    log::warn!(
                        "token {} is back: sessions reopened",
                        self.sessions.token_name()
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

    fn secret_of(&self, id: &str) -> Option<&str> {
        self.keys.get(id).map(|k| k.secret.expose_secret())
    }
}
