//! Retiring key pairs the operator no longer wants on the token: what
//! `hsm-csr keys prune` and `serve`'s `[retention]` remove, and why.
//!
//! The token carries what the policy needs (PKCS #11 v2.40 section 4.7,
//! common key attributes): CKA_START_DATE, the day a key was delivered
//! (keygen, or the claim of a pool key), and CKA_END_DATE, the day a
//! renewal replaced it (`acme renew`). Both are CK_DATEs, whole days in
//! UTC, so policies count whole days.

use serde::Deserialize;

mod prune;

pub use crate::day::Day;
pub use prune::{Held, OwnerCounts, Pruned, Retiring, prune};
pub(crate) use prune::{Inventory, inventory_pass};

/// Which key pairs go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Delivered keys with no certificate, this many days after delivery.
    pub never_certified_after_days: Option<u32>,
    /// Keys a renewal replaced, this many days after (0: at once).
    pub replaced_after_days: Option<u32>,
    /// Lone and torn objects hsm-csr made (a key pair missing a half, a
    /// certificate whose key is gone), and undelivered keys of processes
    /// that stopped.
    pub orphans: bool,
}

impl Policy {
    /// Whether it retires anything at all.
    pub fn is_empty(&self) -> bool {
        self.never_certified_after_days.is_none()
            && self.replaced_after_days.is_none()
            && !self.orphans
    }
}

/// `[retention]`: the policy `serve` applies by itself, and how often.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// [`Policy::never_certified_after_days`].
    pub never_certified_after_days: Option<u32>,
    /// [`Policy::replaced_after_days`].
    pub replaced_after_days: Option<u32>,
    /// [`Policy::orphans`].
    pub orphans: bool,
    /// Seconds between two passes over the token's keys (which also
    /// refresh the per-owner metrics). Default 600.
    pub every_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            never_certified_after_days: None,
            replaced_after_days: None,
            orphans: false,
            every_s: 600,
        }
    }
}

impl RetentionConfig {
    /// What goes.
    pub fn policy(&self) -> Policy {
        Policy {
            never_certified_after_days: self.never_certified_after_days,
            replaced_after_days: self.replaced_after_days,
            orphans: self.orphans,
        }
    }
}

/// Why a key pair goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Delivered on `.0` and never given a certificate.
    NeverCertified(Day),
    /// Replaced by a renewal on `.0`.
    Replaced(Day),
    /// A key pair with no private key, or a certificate with no key.
    Lone,
    /// A half-written key hsm-csr was making (or pooling) when its
    /// process stopped.
    Torn,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NeverCertified(day) => write!(f, "never certified (delivered {day})"),
            Reason::Replaced(day) => write!(f, "replaced by a renewal on {day}"),
            Reason::Lone => f.write_str("lone object (its key pair is incomplete)"),
            Reason::Torn => f.write_str("torn object (its process stopped mid-write)"),
        }
    }
}

impl Reason {
    /// For the audit trail's `cause`.
    pub fn cause(&self) -> &'static str {
        match self {
            Reason::NeverCertified(_) => "RetiredNeverCertified",
            Reason::Replaced(_) => "RetiredReplaced",
            Reason::Lone => "RetiredLoneObject",
            Reason::Torn => "RetiredTornObject",
        }
    }
}
