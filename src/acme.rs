//! ACME (RFC 8555) issuance and renewal with the key on the token.
//!
//! The certificate key pair is made on the token by [`crate::prepare_csr`],
//! exactly as `hsm-csr create` makes it; the CSR it signs there finalises
//! an order ("finalize", RFC 8555 section 7.4). Once the CA's chain is in,
//! the leaf is stored on the token beside its key and only then is the key
//! kept ([`PendingCertificate::commit`]): a refused order, a failed
//! challenge or a CA that does not answer removes the new pair.
//!
//! The ACME *account* key is not on the token: instant-acme 0.8 signs JWS
//! only with its own software P-256 key (its `Signer` trait is private), so
//! the account credentials live in a file of mode 0600 ([`account`]).
//!
//! Every call to the CA runs under a deadline ([`AcmeOptions::timeout`]);
//! validation and issuance polls under [`AcmeOptions::validation_timeout`].

pub(crate) mod account;
pub(crate) mod ari;
mod beside;
mod dns01;
pub(crate) mod hook;
mod http;
mod http01;
mod issue;
pub(crate) mod lock;
mod order;
pub(crate) mod profile;
mod renew;
pub(crate) mod schedule;
pub(crate) mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{AcmeFailure, Error, Result};
use crate::text::one_line;

pub(crate) use http::rate_limited_for;
pub(crate) use issue::{Issued, PendingCertificate, order_certificate};
pub(crate) use profile::Profile;
pub(crate) use renew::{Due, When, due_at, renewable};

/// Where the CA is and how challenges are answered.
#[derive(Clone, Debug)]
pub(crate) struct AcmeOptions {
    /// The directory URL (RFC 8555 section 7.1.1).
    pub directory: String,
    /// The account credentials file (created, mode 0600, when absent).
    pub account_file: PathBuf,
    /// A PEM root to trust for the CA's own HTTPS endpoint instead of the
    /// system's (test CAs such as pebble).
    pub ca_root: Option<PathBuf>,
    /// Contact URIs for a new account (`mailto:...`).
    pub contact: Vec<String>,
    /// Whether the operator agreed to the CA's terms of service; needed to
    /// create an account.
    pub agree_tos: bool,
    /// How challenges are answered.
    pub responder: Responder,
    /// Deadline of each single request to the CA.
    pub timeout: Duration,
    /// Deadline of waiting for validation, and for issuance.
    pub validation_timeout: Duration,
    /// The profile the new order names ([`profile`]).
    pub profile: Profile,
}

/// How challenges are answered.
#[derive(Clone, Debug)]
pub(crate) enum Responder {
    /// http-01 (RFC 8555 section 8.3): hsm-csr serves
    /// `/.well-known/acme-challenge/<token>` on this address while the
    /// order is validated, and nothing else.
    Http01(SocketAddr),
    /// dns-01 (RFC 8555 section 8.4): `hook` is run by `sh -c` for each
    /// name, with `HSM_CSR_ACME_DOMAIN`, `HSM_CSR_ACME_VALIDATION` and
    /// `HSM_CSR_ACME_TOKEN` in its environment, and must publish the TXT
    /// record before it exits 0; `cleanup`, when given, is run the same
    /// way once validation is over.
    Dns01 {
        /// The command that publishes `_acme-challenge.<domain>` TXT.
        hook: String,
        /// The command that removes it.
        cleanup: Option<String>,
        /// How long each hook run may take before it is killed.
        hook_timeout: Duration,
    },
}

/// A runtime for the async ACME client; the rest of the crate is blocking.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the ACME client: {e}")))
}

/// Runs one request to the CA under `timeout`, naming `step` in errors.
async fn call<T>(
    step: &'static str,
    timeout: Duration,
    request: impl Future<Output = std::result::Result<T, instant_acme::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result.map_err(|e| acme_error(step, &e)),
        Err(_) => Err(Error::Acme {
            kind: AcmeFailure::Unreachable,
            step,
            detail: format!("the CA did not answer within {}s", timeout.as_secs()),
        }),
    }
}

/// An instant-acme error as [`Error::Acme`]: the CA's problem document
/// when it sent one, else what stood in the way.
fn acme_error(step: &'static str, e: &instant_acme::Error) -> Error {
    use instant_acme::Error as E;
    let (kind, detail) = match e {
        // RFC 8555 section 6.7.
        E::Api(problem)
            if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited") =>
        {
            (AcmeFailure::RateLimited, problem_text(problem))
        }
        E::Api(problem) => (AcmeFailure::Refused, problem_text(problem)),
        E::Timeout(_) => (
            AcmeFailure::Unreachable,
            "the CA did not finish in time".to_owned(),
        ),
        E::Json(_) | E::Str(_) | E::Unsupported(_) => (
            AcmeFailure::Refused,
            format!("unexpected answer from the CA: {}", chain(e)),
        ),
        _ => {
            let text = chain(e);
            match crate::error::tls::certificate_hint(&text, "--ca-root") {
                Some(hint) => (AcmeFailure::Unreachable, format!("{text}: {hint}")),
                None => (AcmeFailure::Unreachable, text),
            }
        }
    };
    Error::Acme { kind, step, detail }
}

/// An RFC 7807 problem document on one line: `type: detail [sub: ...]`.
fn problem_text(problem: &instant_acme::Problem) -> String {
    let mut text = format!(
        "{}: {}",
        problem.r#type.as_deref().unwrap_or("(no problem type)"),
        problem.detail.as_deref().unwrap_or("(no detail)")
    );
    for sub in &problem.subproblems {
        text.push_str(&format!("; {sub}"));
    }
    one_line(&text)
}

/// An error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    one_line(&text)
}
