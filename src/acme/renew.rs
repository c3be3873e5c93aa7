//! Which certificates on the token `acme renew` renews.
//!
//! Keys are grouped by label (the label prefix followed by the common
//! name, as [`crate::prepare_csr`] names them). A renewal makes a new pair
//! under the same label and leaves the old one, so a group is due only
//! when its *newest* certificate expires within the window: a second run
//! finds nothing to do. When it is due is [`super::schedule`]'s rule, or
//! `--days`.

use std::collections::BTreeMap;

use crate::algorithm::KeyType;
use crate::backend::pkcs11::inventory::KeyEntry;
use crate::certificate::ParsedCertificate;

use super::issue::names_of;
use super::schedule;

/// Which rule says a certificate is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum When {
    /// Its newest certificate ends within this many seconds (`--days`).
    EndsWithin(u64),
    /// Its time has come ([`schedule::without_ari`]).
    Scheduled,
}

/// A certificate to renew.
#[derive(Clone, Debug)]
pub(crate) struct Due {
    /// The key pair whose certificate expires; it stays on the token.
    pub old: KeyEntry,
    /// Its notBefore, seconds since the Unix epoch.
    pub not_before: u64,
    /// Its notAfter, seconds since the Unix epoch.
    pub not_after: u64,
    /// When it is renewed without ARI ([`schedule::without_ari`]).
    pub renew_at: u64,
    /// Its share of a renewal window ([`schedule::share_of`]).
    pub share: f64,
    /// Its RFC 9773 identifier ([`super::ari::cert_id`]), for the CA's
    /// renewal window and the new order's `replaces`.
    pub cert_id: Option<String>,
    /// The common name to ask for again.
    pub common_name: String,
    /// The DNS names and IP addresses to ask for again.
    pub sans: Vec<String>,
    /// The old key's type, which the new key gets too.
    pub key_type: KeyType,
}

/// The newest certificate of each group among `keys` labelled `prefix...`.
pub(crate) fn renewable(keys: &[KeyEntry], prefix: &str) -> Vec<Due> {
    let mut newest: BTreeMap<&str, Due> = BTreeMap::new();
    for key in keys {
        if !key.label.starts_with(prefix) || !key.has_private_key {
            continue;
        }
        let Some(key_type) = key.parsed_key_type() else {
            continue;
        };
        for der in key.certificates() {
            let Ok(cert) = ParsedCertificate::parse(der) else {
                log::warn!(
                    "{}: a stored certificate does not parse; skipped",
                    key.key_uri
                );
                continue;
            };
            // Only certificates for this very key count.
            if cert.spki_der().ok().as_deref() != key.spki_der() {
                continue;
            }
            let not_after = cert.not_after_unix();
            let not_before = cert.not_before_unix();
            let share = schedule::share_of(&cert.der);
            let (cn, sans) = names_of(&cert);
            let Some(common_name) = cn.or_else(|| sans.first().cloned()) else {
                continue;
            };
            // The newest is the last issued: a renewal may end sooner than
            // what it replaced (shorter lifetimes, a short-lived profile).
            if newest
                .get(key.label.as_str())
                .is_none_or(|d| (d.not_before, d.not_after) < (not_before, not_after))
            {
                newest.insert(
                    &key.label,
                    Due {
                        old: key.clone(),
                        not_before,
                        not_after,
                        renew_at: schedule::without_ari(not_before, not_after, share),
                        share,
                        cert_id: super::ari::cert_id(&cert),
                        common_name,
                        sans,
                        key_type,
                    },
                );
            }
        }
    }
    newest.into_values().collect()
}

/// When `due` is due under `when`: its notAfter less the days; with
/// ARI, its place in the CA's window; else [`Due::renew_at`].
pub(crate) fn due_at(due: &Due, when: When, windows: &super::ari::Windows) -> u64 {
    match when {
        // Due when notAfter < now + secs, so from notAfter - secs + 1 on.
        When::EndsWithin(secs) => due.not_after.saturating_sub(secs).saturating_add(1),
        When::Scheduled => match due.cert_id.as_deref().and_then(|id| windows.get(id)) {
            // A window that ends too late is not followed past the last
            // tenth of the certificate's life.
            Some((start, end)) => schedule::in_window(start, end, due.share).min(
                due.not_after
                    .saturating_sub(due.not_after.saturating_sub(due.not_before) / 10),
            ),
            None => due.renew_at,
        },
    }
}
