//! The CSR calls' companions, SetCdnDomainCSRCertificate (Cdn,
//! 2018-05-10) and SetDcdnDomainCSRCertificate (dcdn, 2018-01-15): the
//! certificate a CA signed for a CSR, stored on the token beside its key
//! ([`crate::attach`]).
//!
//! Parameters, as both SDK generations send them: `DomainName` and
//! `ServerCertificate` (the PEM text; a chain's first certificate is the
//! leaf, [`crate::certificate`] says what else is read). The answer is
//! `{RequestId}`; errors are the cloud's `Certificate.*` codes. A call is
//! signed, rate-limited, checked for replay and granted exactly as a CSR
//! call ([`super::handler`]); the certificate is read and matched to the
//! domain before a session is taken, and the token work runs on a blocking
//! thread holding a session permit, within `request_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use super::api::ApiError;
use super::{Service, Sessions, auth, handoff, tokens};
use crate::attach::{AttachPolicy, Attached};
use crate::certificate::ParsedCertificate;
use crate::quota::Caller;

/// Whether `action` is one of the companion calls.
pub(super) fn is_companion(action: &str) -> bool {
    matches!(
        action,
        "SetCdnDomainCSRCertificate" | "SetDcdnDomainCSRCertificate"
    )
}

/// Serves a verified, granted companion call made by `v`, for `caller`.
pub(super) async fn set_certificate<S: Sessions>(
    svc: &Arc<Service<S>>,
    v: &auth::Verified,
    caller: Caller,
    request_id: &str,
) -> Result<Attached, ApiError> {
    let param = |name: &str| {
        v.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, val)| val.as_str())
    };
    let domain = param("DomainName")
        .filter(|d| !d.is_empty())
        .ok_or(ApiError::MissingParameter("DomainName"))?;
    let cert = ParsedCertificate::parse(param("ServerCertificate").unwrap_or("").as_bytes())
        .map_err(|e| ApiError::from(&e))?;
    // Refused here, before it waits for a session; checked again where
    // the certificate is stored.
    cert.check_domain(domain).map_err(|e| ApiError::from(&e))?;
    cert.check_storable(AttachPolicy::now(caller.max_certificates_per_key).now)
        .map_err(|e| ApiError::from(&e))?;
    attach_on_token(
        svc,
        cert,
        domain.to_owned(),
        request_id.to_owned(),
        v.access_key_id.clone(),
        caller,
    )
    .await
}

/// The point where a certificate is attached and its answer about to be
/// released: the log line, and the place for an audit record (written
/// before the answer goes out; return false to refuse the answer, which
/// removes a certificate this call stored).
fn on_attached(a: &Attached, access_key: &str, chain_after: usize) -> bool {
    log::info!(
        "certificate attached RequestId={} access_key={access_key:?} PubMd5={} KeyUri={} stored={} chain_dropped={chain_after}",
        a.request_id,
        a.pub_md5,
        a.key_uri,
        a.stored
    );
    true
}

/// Writes the `certificate_attached` event of a newly stored certificate,
/// when there is an audit log; false (the certificate is then removed)
/// when it cannot be written.
fn recorded(trail: Option<&crate::audit::Trail<'_>>, a: &Attached) -> bool {
    let (Some(trail), true) = (trail, a.stored) else {
        return true;
    };
    match trail.certificate_attached(&a.request_id, &a.pub_md5, &a.key_uri) {
        Ok(()) => true,
        Err(e) => {
            log::error!(
                "RequestId={} {} {e}; the certificate was taken off the token again",
                a.request_id,
                e.code()
            );
            false
        }
    }
}

/// Attaches `cert` on the token that holds its key: each token in turn
/// (on a blocking thread holding one of its session permits) until one has
/// the key. Keeps a newly stored certificate only when the answer is taken
/// within the request timeout.
async fn attach_on_token<S: Sessions>(
    svc: &Arc<Service<S>>,
    cert: ParsedCertificate,
    domain: String,
    request_id: String,
    access_key: String,
    caller: Caller,
) -> Result<Attached, ApiError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(svc.config.request_timeout_ms);
    let cert = Arc::new(cert);
    let caller = Arc::new(caller);
    let mut unreachable = false;
    let mut no_key = None;
    for index in 0..svc.tokens.lanes().len() {
        let who = (access_key.as_str(), svc.weight_of(&access_key));
        let permit = match svc.tokens.acquire_on(index, who, deadline).await {
            Ok(permit) => permit,
            Err(tokens::NoSession::Unavailable) => {
                unreachable = true;
                continue;
            }
            Err(tokens::NoSession::Timeout) => return Err(ApiError::Timeout),
        };
        let (cert, domain, request_id, access_key, caller) = (
            Arc::clone(&cert),
            domain.clone(),
            request_id.clone(),
            access_key.clone(),
            Arc::clone(&caller),
        );
        let attempt = handoff::on_token(
            svc,
            index,
            permit,
            deadline,
            ("attaching a certificate", &request_id.clone()),
            move |svc, lane, offer| {
                let trail = svc.audit.as_ref().map(|log| crate::audit::Trail {
                    log,
                    actor: crate::audit::Actor::access_key(&access_key),
                });
                let mut deliver = |a: &Attached| {
                    on_attached(a, &access_key, cert.chain_after)
                        && recorded(trail.as_ref(), a)
                        && offer(a.clone())
                };
                let done =
                    lane.sessions
                        .attach(&cert, &domain, &caller, &request_id, &mut deliver)?;
                Ok(done.map(drop))
            },
        )
        .await;
        match attempt {
            Err(
                e @ ApiError::Issue {
                    code: "Certificate.NoPrivateKey",
                    ..
                },
            ) => no_key = Some(e),
            Err(ApiError::TokenUnavailable) => unreachable = true,
            done => return done,
        }
    }
    // The key may be on a token that is out of rotation: say so, so that
    // the caller retries, rather than that no key exists.
    match no_key {
        Some(e) if !unreachable => Err(e),
        _ => Err(ApiError::TokenUnavailable),
    }
}
