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
pub mod limits;
pub mod metrics;
pub mod signature;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use axum::routing::{any, get};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::backend::KeyBackend;
use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::pkcs11::inventory::report_unchecked;
use crate::backend::pkcs11::pool::{KeyPool, Pooled};
use crate::error::{Error, Result};
use crate::issue::{KeyOptions, new_request_id, prepare_csr, retry_on_lost_session};
use crate::request::{CsrRequest, SubjectDefaults};
use api::ApiError;

/// `[service]` in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: String,
    /// `HostId` in error bodies. Default `hsm-csr`.
    pub host_id: String,
    /// Calls per second per access key (the API's 100).
    pub rate_limit: u32,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long a request may take, keygen included, before it is answered
    /// with an error and its key removed.
    pub request_timeout_ms: u64,
    /// Accepted clock difference for Timestamp / x-acs-date, in seconds,
    /// and how long a SignatureNonce stays used.
    pub timestamp_window_s: u64,
    /// Largest accepted total size of the request headers, in bytes.
    pub max_header_bytes: usize,
    /// After SIGTERM/SIGINT, how long requests in flight may take to
    /// finish. Those still running then are cut off and their key pairs
    /// removed.
    pub shutdown_timeout_ms: u64,
    /// PEM certificate chain for HTTPS; with `tls_key`. Default: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (a software key: the TLS key is not the
    /// token's business).
    pub tls_key: Option<PathBuf>,
    /// Key pairs made in parallel: one logged-in session each, on its own
    /// blocking thread. 0 (the default) means one per CPU core, capped by
    /// the token's ulMaxRwSessionCount.
    pub workers: usize,
    /// How long a client may take to send a request's headers, in
    /// milliseconds, counted from when the connection is accepted or from
    /// the end of the previous response. Slower connections are closed.
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's body once its headers
    /// are in, in milliseconds; a body shorter than its Content-Length is
    /// refused when this runs out.
    pub body_timeout_ms: u64,
    /// How long a kept-alive connection may sit idle between requests, in
    /// milliseconds, before it is closed.
    pub idle_timeout_ms: u64,
    /// Most connections held open at once; further clients wait in the
    /// listen backlog. Capped below the process's file-descriptor limit.
    pub max_connections: usize,
    /// Whether success responses carry `KeyUri` (the token's label and
    /// serial and the key's CKA_ID). Off: the cloud's response has four fields.
    pub key_uri: bool,
    /// Who may call.
    pub access_keys: Vec<AccessKeyConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: "127.0.0.1:8080".into(),
            host_id: "hsm-csr".into(),
            rate_limit: 100,
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 120_000,
            timestamp_window_s: 900,
            max_header_bytes: 16 * 1024,
            shutdown_timeout_ms: 30_000,
            tls_cert: None,
            tls_key: None,
            workers: 0,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_connections: 512,
            key_uri: false,
            access_keys: Vec::new(),
        }
    }
}

/// `[[service.access_keys]]`: one caller. The secret is never in the file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// The AccessKeyId callers sign with.
    pub id: String,
    /// Environment variable holding the AccessKeySecret.
    pub secret_env: Option<String>,
    /// File holding the AccessKeySecret (one line).
    pub secret_file: Option<PathBuf>,
    /// RAM-style actions it may call: `cdn:CreateCdnCertificateSigningRequest`,
    /// `dcdn:CreateDcdnCertificateSigningRequest`, or `*`.
    pub actions: Vec<String>,
}

struct AccessKey {
    secret: SecretString,
    actions: HashSet<String>,
}

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
    key_options: KeyOptions,
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
            if pool.depth() >= pool.target {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            match pool.make(&mut backend, signature) {
                Ok(key) => pool.put(key, true),
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
    /// Loads the access key secrets and takes over the logged-in
    /// `backends`, one per worker.
    ///
    /// # Errors
    /// `Config.Invalid` when a secret cannot be read or no access key is configured.
    pub fn new(
        backends: Vec<Pkcs11Backend>,
        config: ServiceConfig,
        key_options: KeyOptions,
        defaults: SubjectDefaults,
        pool: Option<Arc<KeyPool>>,
        token: Reconnect,
    ) -> Result<Service> {
        if config.access_keys.is_empty() {
            return Err(Error::Config(
                "no [[service.access_keys]] configured: nobody could call the service.".into(),
            ));
        }
        let mut keys = HashMap::new();
        for k in &config.access_keys {
            let secret = match (&k.secret_env, &k.secret_file) {
                (Some(var), None) => Zeroizing::new(std::env::var(var).map_err(|_| {
                    Error::Config(format!(
                        "access key {}: environment variable {var} is not set.",
                        k.id
                    ))
                })?),
                (None, Some(path)) => {
                    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                        Error::Config(format!(
                            "access key {}: cannot read {}: {e}",
                            k.id,
                            path.display()
                        ))
                    })?);
                    Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned())
                }
                _ => {
                    return Err(Error::Config(format!(
                        "access key {}: give exactly one of secret_env and secret_file.",
                        k.id
                    )));
                }
            };
            if secret.is_empty() {
                return Err(Error::Config(format!(
                    "access key {}: the secret is empty.",
                    k.id
                )));
            }
            keys.insert(
                k.id.clone(),
                AccessKey {
                    secret: SecretString::from(secret.as_str()),
                    actions: k.actions.iter().cloned().collect(),
                },
            );
        }
        key_options.signature()?;
        Ok(Service {
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
        })
    }

    /// The router: the RPC endpoint at `/`, and `/healthz`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics_text))
            .route("/", any(rpc))
            .with_state(self)
    }

    /// Serves on the configured address until SIGINT or SIGTERM.
    ///
    /// # Errors
    /// `Config.Invalid` when the address cannot be bound.
    pub async fn serve(self: Arc<Self>) -> Result<()> {
        let addr: SocketAddr = self.config.listen.parse().map_err(|e| {
            Error::Config(format!("[service] listen {:?}: {e}", self.config.listen))
        })?;
        tokio::spawn(Arc::clone(&self).reconnect_loop());
        let grace = Duration::from_millis(self.config.shutdown_timeout_ms);
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signalled = {
            let stopping = Arc::clone(&stopping);
            async move {
                shutdown_signal().await;
                log::info!(
                    "stopping: no new requests; requests in flight have {} ms to finish",
                    grace.as_millis()
                );
                stopping.notify_one();
            }
        };
        match (&self.config.tls_cert, &self.config.tls_key) {
            (None, None) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
                log::info!("listening on http://{addr}");
                let served = axum::serve(listener, Arc::clone(&self).router())
                    .with_graceful_shutdown(signalled)
                    .into_future();
                tokio::select! {
                    served = served => served.map_err(|e| Error::Internal(e.to_string())),
                    () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
                        // Returning drops the runtime, which cancels the
                        // handlers: their workers see the response refused
                        // and remove the key pairs.
                        log::warn!(
                            "shutdown deadline passed with {} session(s) busy: those requests are cut off and their key pairs removed",
                            self.workers.total - self.workers.available.available_permits()
                        );
                        Ok(())
                    }
                }
            }
            (Some(cert), Some(key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| {
                        Error::Config(format!(
                            "[service] tls_cert {} / tls_key {}: {e}",
                            cert.display(),
                            key.display()
                        ))
                    })?;
                let handle = axum_server::Handle::new();
                let stopper = handle.clone();
                tokio::spawn(async move {
                    signalled.await;
                    stopper.graceful_shutdown(Some(grace));
                });
                log::info!("listening on https://{addr}");
                axum_server::bind_rustls(addr, tls)
                    .handle(handle)
                    .serve(self.router().into_make_service())
                    .await
                    .map_err(|e| Error::Config(format!("cannot serve HTTPS on {addr}: {e}")))
            }
            _ => Err(Error::Config(
                "[service] tls_cert and tls_key go together.".into(),
            )),
        }
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
            self.key_options.signature()?,
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn metrics_text(State(svc): State<Arc<Service>>) -> Response<Body> {
    let busy = svc.workers.total - svc.workers.available.available_permits();
    let body = svc.metrics.render(
        busy,
        svc.workers.total,
        svc.pool.as_deref().map(KeyPool::stats),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::from(body))
        .unwrap_or_default()
}

async fn healthz(State(svc): State<Arc<Service>>) -> Response<Body> {
    let status = tokio::task::spawn_blocking(move || {
        if svc.broken.load(Ordering::Relaxed) {
            return Err(Error::Token {
                op: "reaching the token",
                token: svc.token.selector.describe(),
                detail: "sessions lost; reconnecting".into(),
            });
        }
        let idle = svc.workers.idle.lock().unwrap_or_else(|p| p.into_inner());
        match idle.first() {
            // Every session is busy making a key: the token answers.
            None => Ok(true),
            Some(b) => b.logged_in(),
        }
    })
    .await;
    let (code, body) = match status {
        Ok(Ok(true)) => (
            StatusCode::OK,
            r#"{"Token":"reachable","LoggedIn":true}"#.to_owned(),
        ),
        Ok(Ok(false)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"Token":"reachable","LoggedIn":false}"#.to_owned(),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"Token": "unreachable", "LoggedIn": false, "Error": e.code()})
                .to_string(),
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"Token":"unknown"}"#.to_owned(),
        ),
    };
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

async fn rpc(
    State(svc): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = new_request_id();
    let query = uri.query().unwrap_or("").to_owned();
    // The format for errors raised before the request is verified.
    let early_format = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "Format")
        .map(|(_, v)| v.to_ascii_uppercase())
        .unwrap_or_else(|| "JSON".into());
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    let body = if header_bytes > svc.config.max_header_bytes {
        Err(ApiError::TooLarge)
    } else {
        axum::body::to_bytes(body, svc.config.max_body_bytes)
            .await
            .map_err(|_| ApiError::TooLarge)
    };
    let (outcome, format, action, key_id) = match body {
        Err(e) => (Err(e), early_format, String::new(), String::new()),
        Ok(bytes) => {
            handle(
                &svc,
                &method,
                &uri,
                &query,
                &headers,
                bytes,
                &request_id,
                early_format,
            )
            .await
        }
    };
    let rendered = match &outcome {
        Ok((action, response)) => api::success(action, &format, response),
        Err(e) => api::error(&format, &request_id, &svc.config.host_id, e),
    };
    let code = match &outcome {
        Ok(_) => "OK",
        Err(e) => e.parts().1,
    };
    svc.metrics
        .observe_request(&action, code, started.elapsed());
    log::info!(
        "request RequestId={request_id} action={} access_key={} code={code} status={} duration_ms={:.1}",
        if action.is_empty() { "-" } else { &action },
        if key_id.is_empty() { "-" } else { &key_id },
        rendered.status,
        started.elapsed().as_secs_f64() * 1000.0
    );
    Response::builder()
        .status(rendered.status)
        .header(header::CONTENT_TYPE, rendered.content_type)
        .body(Body::from(rendered.body))
        .unwrap_or_default()
}

type Outcome = (
    std::result::Result<(String, crate::CsrResponse), ApiError>,
    String,
    String,
    String,
);

#[allow(clippy::too_many_arguments)]
async fn handle(
    svc: &Arc<Service>,
    method: &Method,
    uri: &Uri,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
    request_id: &str,
    early_format: String,
) -> Outcome {
    let raw = auth::RawRequest {
        method: method.as_str(),
        path: uri.path(),
        query,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect(),
        body: &body,
    };
    let verified = match auth::verify(&raw, |id| svc.secret_of(id)) {
        Ok(v) => v,
        Err(e) => return (Err(e), early_format, String::new(), String::new()),
    };
    let format = if verified.format == "XML" {
        "XML"
    } else {
        "JSON"
    }
    .to_owned();
    let action = verified.action.clone();
    let key_id = verified.access_key_id.clone();
    let result = authorize_and_issue(svc, verified, request_id).await;
    (result.map(|r| (action.clone(), r)), format, action, key_id)
}

async fn authorize_and_issue(
    svc: &Arc<Service>,
    v: auth::Verified,
    request_id: &str,
) -> std::result::Result<crate::CsrResponse, ApiError> {
    let window = Duration::from_secs(svc.config.timestamp_window_s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if (now - v.timestamp).unsigned_abs() > window.as_secs() {
        return Err(ApiError::InvalidTimeStampExpired);
    }
    if !svc.nonces.first_use(&v.access_key_id, &v.nonce, window * 2) {
        return Err(ApiError::SignatureNonceUsed);
    }
    let (_, version, product) = api::ACTIONS
        .iter()
        .find(|(a, _, _)| *a == v.action)
        .ok_or(ApiError::InvalidActionNotFound)?;
    if *version != v.version {
        return Err(ApiError::InvalidVersion);
    }
    let granted = svc.keys.get(&v.access_key_id).is_some_and(|k| {
        k.actions.contains("*") || k.actions.contains(&format!("{product}:{}", v.action))
    });
    if !granted {
        return Err(ApiError::Forbidden);
    }
    if !svc.rate.admit(&v.access_key_id) {
        return Err(ApiError::Throttling);
    }
    let param = |name: &str| {
        v.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, val)| val.clone())
    };
    let request = CsrRequest {
        common_name: param("CommonName"),
        sans: param("SANs"),
        organization: param("Organization"),
        organization_unit: param("OrganizationUnit"),
        country: param("Country"),
        state: param("State"),
        city: param("City"),
        email: param("Email"),
    };
    let valid = request
        .validate(&svc.defaults)
        .map_err(|e| ApiError::from(&e))?;
    issue_on_token(svc, valid, request_id.to_owned()).await
}

/// Runs the CSR on a blocking thread and keeps its key only if the
/// response is taken within the timeout.
async fn issue_on_token(
    svc: &Arc<Service>,
    valid: crate::ValidRequest,
    request_id: String,
) -> std::result::Result<crate::CsrResponse, ApiError> {
    let (resp_tx, resp_rx) = tokio::sync::oneshot::channel();
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    if svc.broken.load(Ordering::Relaxed) {
        return Err(ApiError::TokenUnavailable);
    }
    let worker = Arc::clone(svc);
    // Wait for a free session without holding a thread; the permit
    // guarantees one is idle (unless the token is being reopened).
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(svc.config.request_timeout_ms);
    let acquire = Arc::clone(&svc.workers.available).acquire_owned();
    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, acquire).await else {
        // Every session stayed busy past the deadline: no key was made.
        return Err(ApiError::Timeout);
    };
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let popped = worker
            .workers
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let Some(mut backend) = popped else {
            // Sessions are being reopened after the token went away.
            let _ = resp_tx.send(Err(ApiError::TokenUnavailable));
            return;
        };
        let mut resp_tx = Some(resp_tx);
        let served = retry_on_lost_session(
            &mut backend,
            |old| worker.fresh_session(old),
            |backend| {
                let mut pooled;
                let source: &mut dyn KeyBackend = match worker.pool.as_deref() {
                    Some(pool) => {
                        pooled = Pooled { backend, pool };
                        &mut pooled
                    }
                    None => backend,
                };
                let pending = prepare_csr(source, &valid, &worker.key_options, request_id.clone())?;
                worker.metrics.observe_phases(pending.timings());
                let response = pending.response().clone();
                let sent = resp_tx
                    .take()
                    .is_some_and(|tx| tx.send(Ok(response)).is_ok());
                // Commit only once the handler has the response in hand; a
                // handler that gave up drops the acknowledgement channel.
                if sent && ack_rx.recv().is_ok() {
                    let _ = pending.commit();
                } else if let Err(e) = pending.rollback() {
                    log::error!("could not remove an undelivered key pair: {e}");
                } else {
                    log::warn!(
                        "nobody took the response (timeout or shutdown); its key pair was removed"
                    );
                }
                Ok(())
            },
        );
        let mut check_session = false;
        if let Err(e) = served {
            log::warn!("CSR failed: {} {e}", e.code());
            check_session = e.class() != crate::ErrorClass::Request;
            if let Some(tx) = resp_tx.take() {
                let _ = tx.send(Err(ApiError::from(&e)));
            }
        }
        settle(&mut backend, &worker.orphans);
        if check_session && !matches!(backend.logged_in(), Ok(true)) {
            log::warn!("the session no longer answers; reconnecting to the token");
            worker.broken.store(true, Ordering::Relaxed);
        }
        worker
            .workers
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(backend);
    });
    match tokio::time::timeout_at(deadline, resp_rx).await {
        Ok(Ok(Ok(response))) => {
            let _ = ack_tx.send(());
            Ok(response)
        }
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ApiError::from(&Error::Internal(
            "worker ended without an answer".into(),
        ))),
        Err(_) => Err(ApiError::Timeout),
    }
}
