//! `hsm-csr serve`: the cloud's CreateCdnCertificateSigningRequest and
//! CreateDcdnCertificateSigningRequest over its RPC protocol, so that the
//! official SDKs work against it with only the endpoint changed; and their
//! companions SetCdnDomainCSRCertificate / SetDcdnDomainCSRCertificate,
//! which store the signed certificate beside its key (`companion`).
//!
//! The HTTP layer only translates: authentication (`auth`), replay and
//! flow control ([`limits`]), the wire format (`api`); the CSR itself is
//! [`crate::prepare_csr`], unchanged, made on `Sessions` (a token's
//! [`SessionPool`]; several tokens are spread over by `tokens`). PKCS#11 calls run on blocking threads, never on the
//! async runtime. A key pair is kept only when its response is handed to
//! the connection; a request that times out has its key removed.

pub(crate) mod api;
pub(crate) mod auth;
pub mod builder;
mod companion;
pub(crate) mod config;
pub(crate) mod coordination;
mod deadline;
mod explorer;
mod handler;
mod handoff;
pub mod limits;
pub mod metrics;
pub(crate) mod redis;
pub mod request_signing;
pub(crate) mod server;
pub(crate) mod sessions;
mod shedding;
#[cfg_attr(
    not(feature = "cli"),
    allow(dead_code, reason = "only the command line's call signs requests")
)]
pub(crate) mod signer;
pub(crate) mod tls;
pub(crate) mod tokens;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get};
use secrecy::ExposeSecret;

use crate::config::ServiceConfig;
use crate::error::Result;
use crate::request::SubjectDefaults;
use crate::session_pool::SessionPool;
use config::AccessKey;
pub(crate) use config::AccessKeys;
pub(crate) use sessions::Sessions;

/// Everything a request handler needs.
pub(crate) struct Service<S: Sessions = SessionPool> {
    /// The tokens, each with one permit per session: a request holds one
    /// while it is on a token.
    tokens: Arc<tokens::Tokens<S>>,
    keys: HashMap<String, AccessKey>,
    defaults: SubjectDefaults,
    config: ServiceConfig,
    limits: limits::Limits,
    metrics: metrics::Metrics,
    audit: Option<crate::audit::AuditLog>,
}

impl<S: Sessions> Service<S> {
    /// Answers calls from `keys` with CSRs made on several tokens, each
    /// named (for `/healthz` and `/metrics`) as the configuration names it.
    pub(crate) fn with_tokens(
        tokens: Vec<tokens::NamedSessions<S>>,
        config: ServiceConfig,
        keys: AccessKeys,
        defaults: SubjectDefaults,
    ) -> Service<S> {
        Service {
            tokens: Arc::new(tokens::Tokens::new(tokens)),
            keys: keys.0,
            defaults,
            limits: limits::Limits::in_memory(config.rate_limit),
            config,
            metrics: metrics::Metrics::default(),
            audit: None,
        }
    }

    /// Keeps the rate limit and the nonces in the Redis `client` names
    /// (see `redis::client`) instead of in memory, so that every replica
    /// using it shares them. Nothing is connected until the service runs;
    /// while Redis does not answer, calls are answered 503.
    pub(crate) fn with_shared_state(mut self, client: ::redis::Client) -> Service<S> {
        let metrics = self.metrics.register_shared_state();
        self.limits = limits::Limits::Shared(limits::SharedLimits::new(
            client,
            &self.config.redis_key_prefix,
            self.config.rate_limit,
            metrics,
        ));
        self
    }

    /// Records what each request does to keys in `log` ([`crate::audit`]).
    #[must_use]
    pub(crate) fn with_audit(mut self, log: Option<crate::audit::AuditLog>) -> Service<S> {
        self.audit = log;
        self
    }

    /// The router: the RPC endpoint at `/`, `/healthz` and `/metrics`,
    /// and the API explorer at `/explorer` when `[service] explorer` is on.
    pub(crate) fn router(self: Arc<Self>) -> Router {
        let mut router = Router::new().route("/", any(handler::rpc::<S>));
        if self.config.explorer {
            router = router.merge(explorer::routes(&self.defaults));
        }
        // With admin_listen, health and metrics are served there only.
        if self.config.admin_listen.is_none() {
            router = router
                .route("/healthz", get(handler::healthz::<S>))
                .route("/metrics", get(handler::metrics_text::<S>));
        }
        router
            .layer(axum::middleware::map_response(handler::with_request_id))
            .with_state(self)
    }

    /// `/healthz` and `/metrics` alone, for `[service] admin_listen`.
    pub(crate) fn admin_router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(handler::healthz::<S>))
            .route("/metrics", get(handler::metrics_text::<S>))
            .layer(axum::middleware::map_response(handler::with_request_id))
            .with_state(self)
    }

    /// Serves on the configured address until SIGINT or SIGTERM, over
    /// HTTPS when `tls_cert` and `tls_key` are set.
    ///
    /// # Errors
    /// `Config.Invalid` when the address cannot be bound or the TLS files
    /// cannot be used.
    pub(crate) async fn serve(self: Arc<Self>) -> Result<()> {
        self.tokens.spawn_reconnects();
        let watched = Arc::clone(&self);
        tokio::spawn(async move { watched.limits.watch().await });
        let sessions = self.tokens.sessions_open();
        let router = Arc::clone(&self).router();
        let main = server::run(&self.config, sessions, router, "listening on");
        let stopped = match &self.config.admin_listen {
            None => main.await?,
            Some(admin) => {
                let admin_config = ServiceConfig {
                    listen: admin.clone(),
                    tls_cert: None,
                    tls_key: None,
                    max_connections: 16,
                    explorer: false,
                    ..self.config.clone()
                };
                let admin_router = Arc::clone(&self).admin_router();
                let admin = server::run(&admin_config, 0, admin_router, "health and metrics on");
                // A bind failure of either stops the start.
                let (stopped, _) = tokio::try_join!(main, admin)?;
                stopped
            }
        };
        if stopped == server::Stopped::DeadlinePassed {
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
        self.tokens.busy()
    }

    /// The first token's sessions.
    #[cfg(test)]
    fn sessions(&self) -> &S {
        &self.tokens.lanes()[0].sessions
    }

    /// The owners' figures for `/metrics`: each configured access key,
    /// and every other owner added up under [`metrics::OTHER_OWNER`].
    fn owner_stats(&self) -> std::collections::BTreeMap<String, metrics::OwnerStats> {
        let mut stats: std::collections::BTreeMap<String, metrics::OwnerStats> = self
            .keys
            .iter()
            .map(|(id, k)| {
                let max_keys = k.caller.quota.as_ref().map(|q| q.max_keys());
                (
                    id.clone(),
                    metrics::OwnerStats {
                        max_keys,
                        ..Default::default()
                    },
                )
            })
            .collect();
        for lane in self.tokens.lanes() {
            for (owner, held) in lane.sessions.owners().0 {
                let label = if self.keys.contains_key(&owner) {
                    owner
                } else {
                    metrics::OTHER_OWNER.to_owned()
                };
                let s = stats.entry(label).or_default();
                s.keys += held.key_pairs;
                s.certificates += held.certificates;
            }
        }
        stats
    }

    /// The key pairs access key `id` owns on the tokens other than
    /// `lane`, as their last pass over every key counted them.
    fn owned_elsewhere(&self, id: &str, lane: usize) -> usize {
        self.tokens
            .lanes()
            .iter()
            .filter(|l| l.index != lane)
            .filter_map(|l| l.sessions.owners().0.get(id).map(|held| held.key_pairs))
            .sum()
    }

    /// An access key's share of the sessions (1 for an unknown one).
    fn weight_of(&self, id: &str) -> u32 {
        self.keys.get(id).map_or(1, |k| k.weight)
    }

    fn secret_of(&self, id: &str) -> Option<&str> {
        self.keys.get(id).map(|k| k.secret.expose_secret())
    }
}
