//! The HTTP handlers: `/` (the RPC actions), `/healthz` and `/metrics`.
//!
//! A request is read (within the body limits), verified ([`super::auth`]),
//! admitted ([`super::limits`]), validated, and only then given a session
//! to make its key on; every answer is rendered by [`super::api`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};

use super::api::{self, ApiError};
use super::{Service, auth, metrics, settle};
use crate::backend::KeyBackend;
use crate::backend::pkcs11::pool::{KeyPool, Pooled};
use crate::error::Error;
use crate::issue::{new_request_id, prepare_csr, retry_on_lost_session};
use crate::request::CsrRequest;

pub(super) async fn metrics_text(State(svc): State<Arc<Service>>) -> Response<Body> {
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

pub(super) async fn healthz(State(svc): State<Arc<Service>>) -> Response<Body> {
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

pub(super) async fn rpc(
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
pub(super) async fn with_request_id(mut response: Response<Body>) -> Response<Body> {
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
    let verified = match auth::authenticate(&raw, |id| svc.secret_of(id)) {
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
