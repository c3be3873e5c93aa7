//! Removing a key pair whose request failed, and recording that in the
//! audit trail.

use super::CsrResponse;
use crate::audit::{EventKind, Trail};
use crate::backend::{GeneratedKey, KeyBackend};
use crate::error::{Error, Result};

/// Records that the key of `r` was rolled back because of `cause` (an API
/// error code); `outcome` is whether the removal worked. Never fails: the
/// request's own error is what the caller gets.
pub(super) fn record_rollback(
    trail: &Trail<'_>,
    r: &CsrResponse,
    removed: &Result<()>,
    cause: &str,
) {
    let event = trail
        .event(EventKind::RolledBack, &r.request_id)
        .key(Some(&r.common_name), &r.pub_md5, &r.key_uri)
        .outcome(removed.as_ref().map_or_else(|e| e.code(), |()| "ok"))
        .cause(cause);
    if let Err(e) = trail.record(event) {
        log::error!("{e} (rolled_back event of {})", r.key_uri);
    }
}

/// Removes `key` after `e` and records it; the error to return.
pub(super) fn undo(
    backend: &mut dyn KeyBackend,
    key: &GeneratedKey,
    trail: Option<&Trail<'_>>,
    r: &CsrResponse,
    e: Error,
) -> Error {
    let removed = backend.destroy(key);
    if let Some(trail) = trail {
        record_rollback(trail, r, &removed, e.code());
    }
    match removed {
        Ok(()) => match e {
            Error::Audit { detail, .. } => Error::Audit {
                detail,
                rolled_back: true,
            },
            e => e,
        },
        Err(rollback) => Error::RollbackFailed {
            original: Box::new(e),
            rollback: rollback.to_string(),
            key_uri: key.uri.clone(),
        },
    }
}
