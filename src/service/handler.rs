//! The HTTP handlers: `/` (the RPC actions), `/healthz` and `/metrics`.
//!
//! A request is read (within the body limits), verified ([`super::auth`]),
//! admitted ([`super::limits`]), validated, and only then given a session
//! to make its key on; every answer is rendered by [`super::api`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};

use super::api::{self, ApiError};
use super::{Service, Sessions, auth, companion, handoff, metrics, tokens};
use crate::attach::Attached;
use crate::issue::{CsrResponse, new_request_id};
use crate::quota::Caller;
use crate::request::CsrRequest;

pub(super) async fn metrics_text<S: Sessions>(
    State(svc): State<Arc<Service<S>>>,
) -> Response<Body> {
    svc.metrics.set_tokens(svc.tokens.stats());
    svc.metrics.set_owners(svc.owner_stats());
    svc.metrics.set_expiries(
        svc.tokens
            .lanes()
            .iter()
            .flat_map(|l| l.sessions.expiries())
            .collect(),
    );
    let body = svc
        .metrics
        .render(svc.busy(), svc.tokens.total(), svc.tokens.key_pool());
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Body::from(body))
        .unwrap_or_default()
}

pub(super) async fn healthz<S: Sessions>(State(svc): State<Arc<Service<S>>>) -> Response<Body> {
    let token = Arc::clone(&svc);
    let status = tokio::task::spawn_blocking(move || token.tokens.health()).await;
    let (code, health) = match status {
        Ok(tokens) => {
            let (code, health) = tokens::health_body(&tokens);
            (
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                health,
            )
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            tokens::Health {
                error: None,
                logged_in: None,
                token: "unknown",
                tokens: None,
                shared_state: None,
            },
        ),
    };
    let (code, health) = with_shared_state(code, health, svc.limits.shared_state_reachable().await);
    let body = serde_json::to_string(&health).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// A /healthz answer with `"SharedState"` added when Redis holds the rate
/// limits and nonces (`reachable`: whether it answered); 503 while it does
/// not, since every call is then refused.
fn with_shared_state(
    code: StatusCode,
    mut health: tokens::Health,
    reachable: Option<bool>,
) -> (StatusCode, tokens::Health) {
    let Some(reachable) = reachable else {
        return (code, health);
    };
    health.shared_state = Some(if reachable {
        "reachable"
    } else {
        "unreachable"
    });
    if reachable {
        (code, health)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, health)
    }
}

pub(super) async fn rpc<S: Sessions>(
    State(svc): State<Arc<Service<S>>>,
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
    let answer = match body {
        Err(e) => Answer::unverified(e, early_format),
        Ok(body) => {
            let call = Call {
                method: &method,
                uri: &uri,
                query: &query,
                headers: &headers,
                body,
                request_id: &request_id,
            };
            handle(&svc, call, early_format).await
        }
    };
    let Answer {
        result,
        format,
        action,
        access_key: key_id,
    } = answer;
    let rendered = match &result {
        Ok(Reply::Csr(response)) => api::success(&action, &format, response, svc.config.key_uri),
        Ok(Reply::Attached(a)) => api::attached(&action, &format, &a.request_id),
        Err(e) => api::error(&format, &request_id, &svc.config.host_id, e),
    };
    let code = match &result {
        Ok(_) => "OK",
        Err(e) => e.parts().1,
    };
    let action = metrics::ActionLabel::of(&action);
    svc.metrics.observe_request(action, code, started.elapsed());
    if code == "QuotaExceeded.Key" {
        // Only a verified caller gets this far: key_id is configured.
        svc.metrics.quota_refused(&key_id);
    }
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
    match &result {
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

/// An RPC call as it came in, body read, not yet verified.
struct Call<'a> {
    method: &'a Method,
    uri: &'a Uri,
    query: &'a str,
    headers: &'a HeaderMap,
    body: Bytes,
    request_id: &'a str,
}

/// What a call answered with.
enum Reply {
    /// A CSR call's response.
    Csr(CsrResponse),
    /// A companion call's certificate, attached.
    Attached(Attached),
}

/// How a call ended, with what its answer and log line need to say.
struct Answer {
    /// The response, or why there is none.
    result: std::result::Result<Reply, ApiError>,
    /// `JSON` or `XML`.
    format: String,
    /// The action asked for; empty when the call was not verified.
    action: String,
    /// The caller's access key id; for a call that failed verification,
    /// the one it claimed ([`auth::claimed_access_key_id`]).
    access_key: String,
}

impl Answer {
    /// A refusal before the caller is known.
    fn unverified(e: ApiError, format: String) -> Answer {
        Answer {
            result: Err(e),
            format,
            action: String::new(),
            access_key: String::new(),
        }
    }
}

/// Verifies `call`, then authorizes and serves it.
async fn handle<S: Sessions>(
    svc: &Arc<Service<S>>,
    call: Call<'_>,
    early_format: String,
) -> Answer {
    let raw = auth::RawRequest {
        method: call.method.as_str(),
        path: call.uri.path(),
        query: call.query,
        headers: call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect(),
        body: &call.body,
    };
    let verified = match auth::authenticate(&raw, |id| svc.secret_of(id)) {
        Ok(v) => v,
        Err(e) => {
            // Named in the log line: who tried, escaped and bounded.
            let mut answer = Answer::unverified(e, early_format);
            answer.access_key = auth::claimed_access_key_id(&raw);
            return answer;
        }
    };
    let format = if verified.format == "XML" {
        "XML"
    } else {
        "JSON"
    }
    .to_owned();
    let action = verified.action.clone();
    let access_key = verified.access_key_id.clone();
    let result = authorize_and_issue(svc, verified, call.request_id).await;
    Answer {
        result,
        format,
        action,
        access_key,
    }
}

async fn authorize_and_issue<S: Sessions>(
    svc: &Arc<Service<S>>,
    v: auth::Verified,
    request_id: &str,
) -> std::result::Result<Reply, ApiError> {
    let window = Duration::from_secs(svc.config.timestamp_window_s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let in_window = (now - v.timestamp).unsigned_abs() <= window.as_secs();
    // Every correctly signed call counts against its caller's rate before
    // the service does anything else for it (lookups, keygen); the nonce
    // of one within the timestamp window is recorded in the same step
    // (one round trip when the state is shared).
    let nonce = in_window.then_some(v.nonce.as_str());
    svc.limits
        .admit(&v.access_key_id, nonce, nonce_lifetime(window))
        .await?;
    if !in_window {
        return Err(ApiError::InvalidTimeStampExpired);
    }
    let (_, version, product) = api::ACTIONS
        .iter()
        .find(|(a, _, _)| *a == v.action)
        .ok_or(ApiError::InvalidActionNotFound)?;
    if *version != v.version {
        return Err(ApiError::InvalidVersion);
    }
    let caller = svc
        .keys
        .get(&v.access_key_id)
        .filter(|k| {
            k.actions.contains("*") || k.actions.contains(&format!("{product}:{}", v.action))
        })
        .map(|k| k.caller.clone())
        .ok_or(ApiError::Forbidden)?;
    if companion::is_companion(&v.action) {
        return companion::set_certificate(svc, &v, caller, request_id)
            .await
            .map(Reply::Attached);
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
    issue_on_token(svc, valid, request_id.to_owned(), v.access_key_id, caller)
        .await
        .map(Reply::Csr)
}

/// How long a nonce stays used: twice the timestamp window (a request
/// stamped at either edge of it), and 2 s more, since the window is checked
/// in whole wall-clock seconds and nonces expire on the monotonic clock.
fn nonce_lifetime(window: Duration) -> Duration {
    window
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(2))
}

/// Runs the CSR on a token's session for `caller` ([`handoff::on_token`]):
/// its key is kept only if the response is taken within the timeout, and
/// the response released only once its delivery is in the audit log (when
/// there is one) and the key kept.
async fn issue_on_token<S: Sessions>(
    svc: &Arc<Service<S>>,
    valid: crate::ValidRequest,
    request_id: String,
    access_key: String,
    caller: Caller,
) -> std::result::Result<CsrResponse, ApiError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(svc.config.request_timeout_ms);
    // Wait for a free session on a token in rotation, in turn with other
    // access keys, without holding a thread; the permit guarantees one is
    // idle (unless that token is being reopened).
    let who = (access_key.as_str(), svc.weight_of(&access_key));
    let (lane, permit) = match svc.tokens.acquire(who, deadline).await {
        Ok(got) => got,
        Err(tokens::NoSession::Unavailable) => return Err(ApiError::TokenUnavailable),
        // Every session stayed busy past the deadline: no key was made.
        Err(tokens::NoSession::Timeout) => return Err(ApiError::Timeout),
    };
    let mut caller = caller;
    if caller.quota.is_some() {
        caller.elsewhere = svc.owned_elsewhere(&access_key, lane);
    }
    handoff::on_token(
        svc,
        lane,
        permit,
        deadline,
        ("CSR", &request_id.clone()),
        move |svc, lane, offer| {
            let trail = svc.audit.as_ref().map(|log| crate::audit::Trail {
                log,
                actor: crate::audit::Actor::access_key(&access_key),
            });
            let mut deliver = |response: CsrResponse| offer(response);
            let served =
                lane.sessions
                    .issue(&valid, &request_id, &caller, trail.as_ref(), &mut deliver)?;
            Ok(served.map(|timings| svc.metrics.observe_phases(timings)))
        },
    )
    .await
}
