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
pub mod limits;
pub mod metrics;
pub mod server;
pub mod signature;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use axum::routing::{any, get};
use secrecy::ExposeSecret;

use crate::backend::KeyBackend;
use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::pkcs11::inventory::report_unchecked;
use crate::backend::pkcs11::pool::{KeyPool, Pooled};
use crate::error::{Error, Result};
use crate::issue::{KeyOptions, new_request_id, prepare_csr, retry_on_lost_session};
use crate::request::{CsrRequest, SubjectDefaults};
use api::ApiError;
use config::AccessKey;
pub use config::{AccessKeyConfig, AccessKeys, ServiceConfig};

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
    ///
    /// # Errors
    /// `Config.Invalid` when the key options are unusable.
    pub fn new(
        backends: Vec<Pkcs11Backend>,
        config: ServiceConfig,
        keys: AccessKeys,
        key_options: KeyOptions,
        defaults: SubjectDefaults,
        pool: Option<Arc<KeyPool>>,
        token: Reconnect,
    ) -> Result<Service> {
        let keys = keys.0;
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
            .layer(axum::middleware::map_response(with_request_id))
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

async fn metrics_text(State(svc): State<Arc<Service>>) -> Response<Body> {
    let busy = svc.workers.total - svc.workers.available.available_permits();
    let body = svc.metrics.render(
        busy,
        svc.workers.total,
        svc.pool.as_deref().map(KeyPool::stats),
    );
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
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
    let body = if method != Method::GET && method != Method::POST {
        Err(ApiError::MethodNotAllowed)
    } else if header_bytes > svc.config.max_header_bytes {
        Err(ApiError::TooLarge)
    } else {
        // A body shorter than its Content-Length would otherwise hold the
        // connection until the client gives up.
        let limit = Duration::from_millis(svc.config.body_timeout_ms);
        match tokio::time::timeout(limit, axum::body::to_bytes(body, svc.config.max_body_bytes))
            .await
        {
            Ok(read) => read.map_err(|_| ApiError::TooLarge),
            Err(_) => Err(ApiError::RequestTimeout),
        }
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
        Ok((action, response)) => api::success(action, &format, response, svc.config.key_uri),
        Err(e) => api::error(&format, &request_id, &svc.config.host_id, e),
    };
    let code = match &outcome {
        Ok(_) => "OK",
        Err(e) => e.parts().1,
    };
    let action = metrics::ActionLabel::of(&action);
    svc.metrics.observe_request(action, code, started.elapsed());
    // Only values from closed sets, or quoted and escaped: no request can
    // write a line of its own into the log.
    log::info!(
        "request RequestId={request_id} action={} access_key={key_id:?} code={code} status={} duration_ms={:.1}",
        action.as_str(),
        rendered.status,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let mut response = Response::builder()
        .status(rendered.status)
        .header(header::CONTENT_TYPE, rendered.content_type)
        .header(REQUEST_ID_HEADER, &request_id);
    match &outcome {
        Err(ApiError::Throttling { retry_after_ms }) => {
            // The new SDK raises ThrottlingException from x-acs-retry-after
            // (milliseconds); Retry-After (RFC 9110 section 10.2.3) is whole seconds.
            let ms = (*retry_after_ms).max(1);
            response = response
                .header("x-acs-retry-after", ms.to_string())
                .header(header::RETRY_AFTER, ms.div_ceil(1000).to_string());
        }
        Err(ApiError::MethodNotAllowed) => response = response.header(header::ALLOW, "GET, POST"),
        // The rest of the body may still come: the connection is not reusable.
        Err(ApiError::RequestTimeout) => response = response.header(header::CONNECTION, "close"),
        _ => {}
    }
    response.body(Body::from(rendered.body)).unwrap_or_default()
}

/// The header every answer carries its RequestId in, as the cloud's do.
const REQUEST_ID_HEADER: &str = "x-acs-request-id";

/// Gives answers that have no RequestId yet (/healthz, /metrics, refusals
/// made before the RPC handler) one of their own.
async fn with_request_id(mut response: Response<Body>) -> Response<Body> {
    if !response.headers().contains_key(REQUEST_ID_HEADER) {
        if let Ok(id) = axum::http::HeaderValue::from_str(&new_request_id()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
    }
    response
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
    // Every correctly signed call counts against its caller's rate before
    // the service does anything else for it (nonce store, lookups, keygen).
    svc.rate
        .admit(&v.access_key_id)
        .map_err(|wait| ApiError::Throttling {
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        })?;
    let window = Duration::from_secs(svc.config.timestamp_window_s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if (now - v.timestamp).unsigned_abs() > window.as_secs() {
        return Err(ApiError::InvalidTimeStampExpired);
    }
    if !svc
        .nonces
        .first_use(&v.access_key_id, &v.nonce, window.saturating_mul(2))
    {
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
