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
use super::{Service, Sessions, auth, tokens};
use crate::attach::Attached;
use crate::certificate::ParsedCertificate;
use crate::error::{Error, ErrorClass};

/// Whether `action` is one of the companion calls.
pub(super) fn is_companion(action: &str) -> bool {
    matches!(
        action,
        "SetCdnDomainCSRCertificate" | "SetDcdnDomainCSRCertificate"
    )
}

/// Serves a verified, granted companion call made by `v`.
pub(super) async fn set_certificate<S: Sessions>(
    svc: &Arc<Service<S>>,
    v: &auth::Verified,
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
    attach_on_token(
        svc,
        cert,
        domain.to_owned(),
        request_id.to_owned(),
        v.access_key_id.clone(),
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
) -> Result<Attached, ApiError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(svc.config.request_timeout_ms);
    let cert = Arc::new(cert);
    let mut unreachable = false;
    let mut no_key = None;
    for index in 0..svc.tokens.lanes().len() {
        let permit = match svc.tokens.acquire_on(index, deadline).await {
            Ok(permit) => permit,
            Err(tokens::NoSession::Unavailable) => {
                unreachable = true;
                continue;
            }
            Err(tokens::NoSession::Timeout) => return Err(ApiError::Timeout),
        };
        match attach_on(
            svc,
            index,
            permit,
            &cert,
            &domain,
            &request_id,
            &access_key,
            deadline,
        )
        .await
        {
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

/// One attempt on token `index`, holding `permit`.
#[allow(clippy::too_many_arguments)]
async fn attach_on<S: Sessions>(
    svc: &Arc<Service<S>>,
    index: usize,
    permit: tokens::Permit,
    cert: &Arc<ParsedCertificate>,
    domain: &str,
    request_id: &str,
    access_key: &str,
    deadline: tokio::time::Instant,
) -> Result<Attached, ApiError> {
    let (resp_tx, resp_rx) = tokio::sync::oneshot::channel();
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    let worker = Arc::clone(svc);
    let (cert, domain, request_id, access_key) = (
        Arc::clone(cert),
        domain.to_owned(),
        request_id.to_owned(),
        access_key.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut resp_tx = Some(resp_tx);
        let trail = worker.audit.as_ref().map(|log| crate::audit::Trail {
            log,
            actor: crate::audit::Actor::access_key(&access_key),
        });
        let mut deliver = |a: &Attached| {
            on_attached(a, &access_key, cert.chain_after)
                && recorded(trail.as_ref(), a)
                && resp_tx
                    .take()
                    .is_some_and(|tx| tx.send(Ok(a.clone())).is_ok())
                && ack_rx.recv().is_ok()
        };
        let lane = &worker.tokens.lanes()[index];
        let done = lane
            .sessions
            .attach(&cert, &domain, &request_id, &mut deliver);
        let failed = match done {
            Ok(Some(_)) => None,
            Ok(None) => Some(ApiError::TokenUnavailable),
            Err(e) if e.class() != ErrorClass::Request && lane.sessions.is_broken() => {
                log::warn!(
                    "attaching a certificate failed: token {:?} went away: RequestId={request_id} {} {e}",
                    lane.name,
                    e.code()
                );
                Some(ApiError::TokenUnavailable)
            }
            Err(e) => {
                log::warn!(
                    "attaching a certificate failed: RequestId={request_id} {} {e}",
                    e.code()
                );
                Some(ApiError::from(&e))
            }
        };
        if let (Some(e), Some(tx)) = (failed, resp_tx.take()) {
            let _ = tx.send(Err(e));
        }
    });
    match tokio::time::timeout_at(deadline, resp_rx).await {
        Ok(Ok(Ok(attached))) => {
            let _ = ack_tx.send(());
            Ok(attached)
        }
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ApiError::from(&Error::Internal(
            "worker ended without an answer".into(),
        ))),
        Err(_) => Err(ApiError::Timeout),
    }
}
