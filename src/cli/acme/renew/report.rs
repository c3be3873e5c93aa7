//! What a renewal run reports (`RenewReport`, printed as JSON or a table)
//! and how each due renewal's outcome is recorded in it and in what is
//! remembered of its key.

use serde::Serialize;

use crate::Error;
use crate::acme;

use super::super::{CertificateReport, rfc3339};
use super::name_key;
use super::work::Done;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RenewReport {
    pub(super) request_id: String,
    /// The new certificates, each with the one it replaces.
    pub(super) renewed: Vec<Renewed>,
    pub(super) failed: Vec<Failed>,
    /// Certificates that are not due yet.
    pub(super) not_due: usize,
    /// When the first of them is due (RFC 3339), if any.
    pub(super) next_renewal: Option<String>,
    /// Due, but left for the next run: the CA's rate limit outlasted
    /// `--rate-limit-wait`.
    pub(super) deferred: usize,
    /// Seconds waited for the CA's rate limit.
    pub(super) rate_limit_waited_s: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Renewed {
    #[serde(flatten)]
    pub(super) new: CertificateReport,
    /// The old pair and certificate, kept and marked as replaced until
    /// `keys prune --replaced-after` retires them.
    pub(super) replaces: Old,
    /// Why `--deploy-hook` failed for it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) deploy_hook_error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Old {
    pub(super) key_uri: String,
    pub(super) pub_md5: Option<String>,
    pub(super) not_after: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Failed {
    pub(super) common_name: String,
    pub(super) replaces: Old,
    pub(super) code: &'static str,
    pub(super) message: String,
}

/// What [`record`] leaves for the run's verdict.
pub(super) struct Recorded {
    /// The run's first error: the one it came in with, or the first
    /// renewal that failed.
    pub(super) first_error: Option<Error>,
    /// Renewals whose worker stopped on a bug before them.
    pub(super) not_tried: usize,
    /// The first `--deploy-hook` failure.
    pub(super) hook_error: Option<Error>,
    /// The first renewal the CA's rate limit deferred.
    pub(super) rate_limited: Option<Error>,
}

/// Records each due renewal's outcome in the report and in what is
/// remembered of its key.
pub(super) fn record(
    due: &[(usize, acme::Due)],
    done: Vec<Option<Done>>,
    asks: &[(Option<&str>, acme::Profile)],
    token_ids: &[(String, String)],
    now: u64,
    (names, report): (&mut acme::state::Names, &mut RenewReport),
    mut first_error: Option<Error>,
) -> Recorded {
    let mut not_tried = 0;
    // Neither leaves anything on the token to sweep.
    let mut hook_error = None;
    let mut rate_limited = None;
    for (((t, d), outcome), (_, profile)) in due.iter().zip(done).zip(asks) {
        let old = Old {
            key_uri: d.old.key_uri.clone(),
            pub_md5: d.old.pub_md5.clone(),
            not_after: rfc3339(d.not_after),
        };
        let key = name_key(token_ids, *t, &d.old.label);
        match outcome {
            Some(Done::Renewed {
                issued,
                chain,
                deploy,
            }) => {
                names.issued(&key, profile.name());
                report.renewed.push(Renewed {
                    new: CertificateReport::of(&issued, chain.as_deref()),
                    replaces: old,
                    deploy_hook_error: deploy.as_ref().err().map(ToString::to_string),
                });
                if let Err(e) = deploy {
                    hook_error.get_or_insert(e);
                }
            }
            Some(Done::Failed(e)) => {
                names.failed(&key, now, e.code(), &e.to_string());
                report.failed.push(Failed {
                    common_name: d.common_name.clone(),
                    replaces: old,
                    code: e.code(),
                    message: e.to_string(),
                });
                first_error.get_or_insert(e);
            }
            Some(Done::Deferred(refused)) => {
                report.deferred += 1;
                if let Some(e) = refused {
                    names.failed(&key, now, e.code(), &e.to_string());
                    rate_limited.get_or_insert(e);
                }
            }
            // Its worker stopped on a bug before it (`first_error` says so).
            None => not_tried += 1,
        }
    }
    Recorded {
        first_error,
        not_tried,
        hook_error,
        rate_limited,
    }
}
