//! The one hand-off from a call's handler to a token's worker session,
//! shared by the CSR calls and their companions.
//!
//! The work runs on a blocking thread holding a session permit. When it
//! has an answer it offers it ([`Offer`]); the handler, still waiting
//! within the deadline, takes it and acknowledges; only then does the
//! work keep what it made (commit the key, keep the certificate) and
//! record it, and send its verdict, which the handler awaits without a
//! deadline (or a kept key could be answered "no key was kept"). A handler
//! that gave up drops the acknowledgement channel, and the work removes
//! what it made.

use std::sync::Arc;

use tokio::time::Instant;

use super::api::ApiError;
use super::tokens::{Lane, Permit};
use super::{Service, Sessions};
use crate::error::{Error, ErrorClass};

/// Offers an answer to the waiting handler; true once it took it.
pub(super) type Offer<'a, T> = &'a mut dyn FnMut(T) -> bool;

/// What the work on a session reports: `Ok(Some(_))` done, `Ok(None)` no
/// idle session (the token is being reopened), or why it failed.
pub(super) type Worked = crate::Result<Option<()>>;

/// Runs `work` on token `lane`'s session (the permit held for it), and
/// returns the answer it offered.
pub(super) async fn on_token<S, T, W>(
    svc: &Arc<Service<S>>,
    lane: usize,
    permit: Permit,
    deadline: Instant,
    (what, request_id): (&'static str, &str),
    work: W,
) -> Result<T, ApiError>
where
    S: Sessions,
    T: Send + 'static,
    W: FnOnce(&Service<S>, &Lane<S>, Offer<'_, T>) -> Worked + Send + 'static,
{
    let (resp_tx, resp_rx) = tokio::sync::oneshot::channel();
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel();
    let worker = Arc::clone(svc);
    let request_id = request_id.to_owned();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut resp_tx = Some(resp_tx);
        let mut offer = |answer: T| {
            let sent = resp_tx.take().is_some_and(|tx| tx.send(Ok(answer)).is_ok());
            sent && ack_rx.recv().is_ok()
        };
        let Some(lane) = worker.tokens.lanes().get(lane) else {
            // Never offered: dropping the sender tells the handler.
            return;
        };
        let worked = work(&worker, lane, &mut offer);
        lane.observe(matches!(worked, Ok(Some(()))));
        let verdict = match worked {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(ApiError::TokenUnavailable),
            // The token went away under this call: say so, so that the
            // caller retries (and lands on another token, if any).
            // The detail (a PKCS#11 function and return value, a path)
            // stays here, with the RequestId; the caller gets the code and
            // the API's message (ApiError::from).
            Err(e) if e.class() != ErrorClass::Request && lane.sessions.is_broken() => {
                log::warn!(
                    "{what} failed RequestId={request_id}: token {:?} went away: {} {e}",
                    lane.name,
                    e.code()
                );
                Err(ApiError::TokenUnavailable)
            }
            Err(e) => {
                log::warn!(
                    "{what} failed RequestId={request_id} on token {:?}: {} {e}",
                    lane.name,
                    e.code()
                );
                Err(ApiError::from(&e))
            }
        };
        match (resp_tx.take(), verdict) {
            (Some(tx), Err(e)) => {
                let _ = tx.send(Err(e));
            }
            // Never offered: dropping the sender tells the handler.
            (Some(_), Ok(())) => {}
            (None, verdict) => {
                let _ = verdict_tx.send(verdict);
            }
        }
    });
    let ended = || ApiError::from(&Error::Internal("worker ended without an answer".into()));
    match tokio::time::timeout_at(deadline, resp_rx).await {
        Ok(Ok(Ok(answer))) => {
            let _ = ack_tx.send(());
            match verdict_rx.await {
                Ok(Ok(())) => Ok(answer),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ended()),
            }
        }
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ended()),
        Err(_) => Err(ApiError::Timeout),
    }
}
