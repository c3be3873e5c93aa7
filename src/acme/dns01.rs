//! The dns-01 hooks (RFC 8555 section 8.4), run the way certbot runs its
//! manual auth and cleanup hooks: `sh -c CMD`, with what to publish in the
//! environment (never on the command line):
//!
//! - `HSM_CSR_ACME_DOMAIN`: the name being validated, without `*.`; the
//!   record goes at `_acme-challenge.<domain>`;
//! - `HSM_CSR_ACME_VALIDATION`: the TXT value, base64url(SHA-256(key
//!   authorization));
//! - `HSM_CSR_ACME_TOKEN`: the challenge token.
//!
//! How a hook is run (its output, its process group, its deadline) is
//! [`super::hook`]'s.

use std::time::Duration;

use crate::error::{AcmeFailure, Error, Result};

/// What one hook run publishes or removes.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub domain: String,
    pub validation: String,
    pub token: String,
}

/// Runs `cmd` for `record`, waiting at most `timeout`.
///
/// # Errors
/// `Acme.ResponderFailed` when it cannot start, fails, or runs too long.
pub(super) async fn run(
    which: &'static str,
    cmd: &str,
    record: &Record,
    timeout: Duration,
) -> Result<()> {
    let cmd = cmd.to_owned();
    let record = record.clone();
    tokio::task::spawn_blocking(move || {
        super::hook::run(
            which,
            &cmd,
            &[
                ("HSM_CSR_ACME_DOMAIN", record.domain.as_str()),
                ("HSM_CSR_ACME_VALIDATION", record.validation.as_str()),
                ("HSM_CSR_ACME_TOKEN", record.token.as_str()),
            ],
            timeout,
            (AcmeFailure::Responder, &record.domain),
        )
    })
    .await
    .map_err(|e| Error::Internal(format!("dns-01 hook task: {e}")))?
}
