//! A mock [`Sessions`], and calls signed as the RPC SDKs sign them.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use secrecy::SecretString;

use crate::attach::{AttachPolicy, Attached, attach_certificate};
use crate::audit::Trail;
use crate::backend::mock::MockBackend;
use crate::backend::pkcs11::pool::PoolStats;
use crate::certificate::ParsedCertificate;
use crate::issue::{CsrResponse, Timings, ValidKeyOptions, hand_over, prepare_csr};
use crate::owner::{Owner, Principal};
use crate::quota::KeyQuota;
use crate::quota::{Caller, Reserved};
use crate::request::{SubjectDefaults, ValidRequest};
use crate::service::config::{ALL_KEYS, AccessKey, AccessKeys};
use crate::service::tokens::NamedSessions;
use crate::service::{Service, ServiceConfig, Sessions, request_signing};

/// [`Sessions`] on one mock backend.
#[derive(Default)]
pub(super) struct MockSessions {
    pub(super) backend: Mutex<MockBackend>,
    pub(super) broken: AtomicBool,
    /// Every session taken by a reconnect in progress.
    pub(super) none_idle: AtomicBool,
    /// How long making a CSR takes.
    pub(super) keygen_time: Duration,
    /// The token answers every call with CKR_DEVICE_ERROR.
    pub(super) device_error: bool,
    /// How many attach calls reached the token.
    pub(super) attach_calls: AtomicU64,
    /// ... and is found gone after such a call (as a SessionPool marks it).
    pub(super) gone_on_error: bool,
}

impl MockSessions {
    pub(super) fn backend(&self) -> std::sync::MutexGuard<'_, MockBackend> {
        self.backend.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sessions for MockSessions {
    fn total(&self) -> usize {
        1
    }

    fn sessions_open(&self) -> usize {
        1
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    fn token_name(&self) -> String {
        "mock".into()
    }

    fn health(&self) -> crate::Result<bool> {
        Ok(!self.is_broken())
    }

    fn key_pool(&self) -> Option<PoolStats> {
        None
    }

    fn issue(
        &self,
        request: &ValidRequest,
        request_id: &str,
        caller: &Caller,
        audit: Option<&Trail<'_>>,
        deliver: &mut dyn FnMut(CsrResponse) -> bool,
    ) -> crate::Result<Option<Timings>> {
        if self.none_idle.load(Ordering::Relaxed) {
            return Ok(None);
        }
        std::thread::sleep(self.keygen_time);
        if self.device_error {
            if self.gone_on_error {
                self.broken.store(true, Ordering::Relaxed);
            }
            return Err(crate::Error::Token {
                op: "C_GenerateKeyPair",
                token: "mock-token-label".into(),
                detail: crate::backend::mock::pkcs11_failure(
                    cryptoki::context::Function::GenerateKeyPair,
                    cryptoki::error::RvError::DeviceError,
                ),
            });
        }
        let mut backend = self.backend();
        let reservation = caller.reserve(&mut *backend, "mock")?;
        let options = ValidKeyOptions::default().owned_by(caller.principal.owner.clone());
        let mut source = Reserved {
            backend: &mut *backend,
            reservation,
        };
        let id = request_id.to_owned();
        let pending = prepare_csr(&mut source, request, &options, id, audit.cloned())?;
        hand_over(pending, deliver).map(Some)
    }

    fn reopen(&self) -> crate::Result<()> {
        self.broken.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn attach(
        &self,
        cert: &ParsedCertificate,
        domain: &str,
        caller: &Caller,
        request_id: &str,
        deliver: &mut dyn FnMut(&Attached) -> bool,
    ) -> crate::Result<Option<Attached>> {
        self.attach_calls.fetch_add(1, Ordering::Relaxed);
        let policy = AttachPolicy::now(caller.max_certificates_per_key);
        attach_certificate(
            &mut *self.backend(),
            cert,
            Some(domain),
            &caller.principal,
            policy,
            request_id,
            deliver,
        )
        .map(Some)
    }
}

/// Access key `id` with `actions` and, when given, a key quota.
fn access_key(id: &str, actions: &[&str], max_keys: Option<usize>) -> (String, AccessKey) {
    let actions = actions
        .iter()
        .map(|a| (*a).to_owned())
        .collect::<HashSet<_>>();
    let caller = Caller {
        principal: Principal {
            owner: Owner::new(id).unwrap(),
            all_keys: actions.contains(ALL_KEYS),
        },
        quota: max_keys.map(|m| Arc::new(KeyQuota::new(m))),
        max_certificates_per_key: 4,
        elsewhere: 0,
    };
    let key = AccessKey {
        secret: SecretString::from("SECRET"),
        actions,
        caller,
        weight: 1,
    };
    (id.to_owned(), key)
}

pub(super) fn service_with(
    sessions: MockSessions,
    config: ServiceConfig,
) -> Arc<Service<MockSessions>> {
    service_over(vec![sessions], config)
}

/// A service over several mock tokens, named `t0`, `t1`, ...
pub(super) fn service_over(
    tokens: Vec<MockSessions>,
    config: ServiceConfig,
) -> Arc<Service<MockSessions>> {
    let keys = AccessKeys(HashMap::from([
        access_key("AKID", &["*"], None),
        access_key("NOGRANT", &[], None),
        access_key("CSRONLY", &["cdn:CreateCdnCertificateSigningRequest"], None),
        // Another tenant, one with a quota, and an operator's automation.
        access_key("OTHER", &["*"], None),
        access_key("QUOTA2", &["*"], Some(2)),
        access_key("ADMIN", &["*", ALL_KEYS], None),
    ]));
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, s)| NamedSessions {
            sessions: Arc::new(s),
            name: format!("t{i}"),
        })
        .collect();
    Arc::new(Service::with_tokens(
        tokens,
        config,
        keys,
        SubjectDefaults::default(),
    ))
}

pub(super) fn service() -> Arc<Service<MockSessions>> {
    service_with(MockSessions::default(), ServiceConfig::default())
}

/// Sends `request` through the router; the status and the body as JSON
/// (Null when it is not JSON).
pub(super) async fn send(
    svc: &Arc<Service<MockSessions>>,
    request: Request<Body>,
) -> (StatusCode, serde_json::Value, Response<()>) {
    let router = TowerToHyperService::new(Arc::clone(svc).router());
    let response = router.call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (parts.status, json, Response::from_parts(parts, ()))
}

fn now() -> String {
    crate::service::request_signing::timestamp_now()
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// The common parameters of an RPC call by AKID, now, with a fresh nonce.
pub(super) fn common() -> Vec<(String, String)> {
    let nonce = format!("nonce-{}", NONCE.fetch_add(1, Ordering::Relaxed));
    [
        ("AccessKeyId", "AKID"),
        ("Action", "CreateCdnCertificateSigningRequest"),
        ("Version", "2018-05-10"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", now().as_str()),
        ("CommonName", "www.example.com"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

pub(super) fn query_of(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                request_signing::percent_encode(k),
                request_signing::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A GET signed with `secret` over `params`.
pub(super) fn signed_with(secret: &str, mut params: Vec<(String, String)>) -> Request<Body> {
    let sts = request_signing::rpc_string_to_sign("GET", &params);
    params.push((
        "Signature".into(),
        request_signing::rpc_signature(secret, &sts),
    ));
    get(&query_of(&params))
}

pub(super) fn signed(params: Vec<(String, String)>) -> Request<Body> {
    signed_with("SECRET", params)
}

pub(super) fn get(query: &str) -> Request<Body> {
    Request::get(format!("/?{query}"))
        .body(Body::empty())
        .unwrap()
}

/// `params` with `name` set to `value` (added when absent).
pub(super) fn with(
    mut params: Vec<(String, String)>,
    name: &str,
    value: &str,
) -> Vec<(String, String)> {
    params.retain(|(k, _)| k != name);
    params.push((name.into(), value.into()));
    params
}

pub(super) fn without(mut params: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    params.retain(|(k, _)| k != name);
    params
}

pub(super) async fn code_of(
    svc: &Arc<Service<MockSessions>>,
    request: Request<Body>,
) -> (StatusCode, String) {
    let (status, body, _) = send(svc, request).await;
    (status, body["Code"].as_str().unwrap_or("").to_owned())
}

/// A body that never comes.
pub(super) struct Stalled;

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}
