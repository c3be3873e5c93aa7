//! Which key pairs on the token a [`Policy`] retires, and retiring them
//! ([`Pkcs11Backend::prune`]): `hsm-csr keys prune` and `serve`'s
//! `[retention]` pass.
//!
//! Never retired: an unassigned pool key, a key not yet delivered whose
//! process still runs (or cannot be judged from here), and anything that
//! is not hsm-csr's own (another label prefix, another CKA_ID form) unless
//! a dated policy names it. A delivered key is retired only by the dated
//! policies the operator chose, never as an orphan, even when a crash left
//! it without its public half: its caller may hold its CSR.

use std::sync::Arc;

use super::inventory::{KeyEntry, date_of};
use super::mark::{self, Liveness};
use super::{Pkcs11Backend, describe, pool};
use crate::audit::{EventKind, Trail};
use crate::error::{Error, Result};
use crate::owner::Owner;
use crate::retention::{Day, Policy, Reason};

/// A key pair (or lone object) a policy retires, and why.
#[derive(Clone, Debug)]
pub struct Retiring {
    /// What goes: every object listed under its CKA_ID.
    pub key: KeyEntry,
    /// Why.
    pub reason: Reason,
}

/// What a prune did to one key pair.
#[derive(Clone, Debug)]
pub struct Pruned {
    /// The key pair and why it goes.
    pub retiring: Retiring,
    /// Whether it was removed: None on a dry run; the error's code and
    /// message when removing failed.
    pub removed: Option<std::result::Result<(), String>>,
}

/// Key pairs and certificates per owner (`""` for none), as the last
/// [`Inventory`] pass found them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerCounts(pub std::collections::BTreeMap<String, (usize, usize)>);

/// `serve`'s periodic pass over every key of a token (`[retention]`).
#[derive(Debug)]
pub struct Inventory {
    /// How often.
    pub every: std::time::Duration,
    /// What it retires (possibly nothing).
    pub policy: Policy,
    /// `[key] label_prefix`: what is hsm-csr's.
    pub prefix: String,
    /// Where retirements are recorded.
    pub audit: Option<crate::audit::AuditLog>,
    /// Where the counts go.
    pub owners: std::sync::Mutex<OwnerCounts>,
}

/// Whether hsm-csr made `key`: a mark, a pool ID, or its label prefix.
fn ours(key: &KeyEntry, prefix: &str) -> bool {
    let id = key.id_bytes();
    mark::decode(id).is_some()
        || pool::is_pool_id(id)
        || (!prefix.is_empty() && key.label.starts_with(prefix))
}

/// The keys among `keys` that `policy` retires on `today`; only `owner`'s
/// when given. `dead` says whether the process that marked an undelivered
/// key has stopped.
pub fn select(
    keys: &[KeyEntry],
    policy: &Policy,
    today: Day,
    prefix: &str,
    owner: Option<&Owner>,
    dead: &mut dyn FnMut(&KeyEntry) -> bool,
) -> Vec<Retiring> {
    let mut retiring = Vec::new();
    for key in keys {
        if owner.is_some_and(|o| !key.is_owned_by(o)) {
            continue;
        }
        let id = key.id_bytes();
        let whole = key.has_private_key && key.has_public_key;
        let reason = if mark::decode(id).is_some() {
            // Not yet delivered: the sweep's rule, as an orphan.
            (policy.orphans && dead(key)).then_some(Reason::Torn)
        } else if pool::is_pool_id(id) {
            // An unassigned pool key is the pool's; a torn one is nobody's.
            (policy.orphans && !whole).then_some(Reason::Torn)
        } else if !key.has_private_key {
            (policy.orphans && ours(key, prefix)).then_some(Reason::Lone)
        } else if id.is_empty() && key.label.is_empty() {
            // A private key with neither CKA_ID nor label: hsm-csr never
            // makes one, a write cut off by a crash leaves one.
            policy.orphans.then_some(Reason::Torn)
        } else if let (Some(days), Some(on)) = (policy.replaced_after_days, key.replaced) {
            (on <= today.minus(days)).then_some(Reason::Replaced(on))
        } else if let (Some(days), Some(on), true) = (
            policy.never_certified_after_days,
            key.delivered,
            key.certificates().is_empty(),
        ) {
            (on <= today.minus(days)).then_some(Reason::NeverCertified(on))
        } else {
            None
        };
        if let Some(reason) = reason {
            retiring.push(Retiring {
                key: key.clone(),
                reason,
            });
        }
    }
    retiring
}

impl Pkcs11Backend {
    /// Lists the token and retires what `policy` says (see [`select`]),
    /// `owner`'s keys only when given; with `act` false, a dry run that
    /// removes nothing. Each removal is recorded in `audit` (event
    /// `deleted`, cause `Retired...`) once it is done.
    ///
    /// # Errors
    /// A token error when the token cannot be listed; a failed removal is
    /// reported in its [`Pruned`], and the others go on.
    pub fn prune(
        &mut self,
        policy: &Policy,
        prefix: &str,
        owner: Option<&Owner>,
        act: bool,
        audit: Option<&Trail<'_>>,
        request_id: &str,
    ) -> Result<Vec<Pruned>> {
        let keys = self.list_keys()?;
        self.prune_listed(&keys, policy, prefix, owner, act, audit, request_id)
    }

    /// [`Self::prune`] over `keys`, a listing of this token.
    #[allow(clippy::too_many_arguments)]
    fn prune_listed(
        &mut self,
        keys: &[KeyEntry],
        policy: &Policy,
        prefix: &str,
        owner: Option<&Owner>,
        act: bool,
        audit: Option<&Trail<'_>>,
        request_id: &str,
    ) -> Result<Vec<Pruned>> {
        let coordinator = Arc::clone(&self.coordinator);
        let mut dead = |key: &KeyEntry| {
            mark::decode(key.id_bytes())
                .is_some_and(|(o, _)| mark::liveness(&o, coordinator.as_ref()) == Liveness::Dead)
        };
        let retiring = select(keys, policy, Day::today(), prefix, owner, &mut dead);
        let mut pruned = Vec::new();
        for r in retiring {
            let removed = act.then(|| {
                let done = if mark::decode(r.key.id_bytes()).is_some() {
                    self.destroy_marked(r.key.id_bytes())
                } else {
                    self.delete_key(&r.key)
                };
                if let Some(trail) = audit {
                    let outcome = done.as_ref().map_or_else(|e| e.code(), |()| "ok");
                    let event = trail
                        .event(EventKind::Deleted, request_id)
                        .key(None, r.key.pub_md5.as_deref().unwrap_or(""), &r.key.key_uri)
                        .outcome(outcome)
                        .cause(r.reason.cause());
                    if let Err(e) = trail.record(event) {
                        log::error!(
                            "{} was retired, but its audit event was not written: {e}",
                            r.key.key_uri
                        );
                    }
                }
                done.map_err(|e| format!("{} {e}", e.code()))
            });
            pruned.push(Pruned {
                retiring: r,
                removed,
            });
        }
        Ok(pruned)
    }

    /// One pass over every key of the token: the per-owner counts, and
    /// `[retention]` applied (see [`Inventory`]).
    ///
    /// # Errors
    /// A token error when the token cannot be listed.
    pub fn inventory_pass(&mut self, pass: &Inventory) -> Result<()> {
        let keys = self.list_keys()?;
        let mut owners = OwnerCounts::default();
        for k in keys
            .iter()
            .filter(|k| k.has_private_key && mark::decode(k.id_bytes()).is_none())
        {
            if pool::is_pool_id(k.id_bytes()) {
                continue;
            }
            let counts = owners
                .0
                .entry(k.owner.clone().unwrap_or_default())
                .or_default();
            counts.0 += 1;
            counts.1 += k.certificates().len();
        }
        *pass.owners.lock().unwrap_or_else(|p| p.into_inner()) = owners;
        if pass.policy.is_empty() {
            return Ok(());
        }
        let trail = pass.audit.as_ref().map(|log| Trail {
            log,
            actor: crate::audit::Actor::local_user(),
        });
        let request_id = crate::issue::new_request_id();
        let pruned = self.prune_listed(
            &keys,
            &pass.policy,
            &pass.prefix,
            None,
            true,
            trail.as_ref(),
            &request_id,
        )?;
        let removed = pruned
            .iter()
            .filter(|p| matches!(p.removed, Some(Ok(()))))
            .count();
        if !pruned.is_empty() {
            log::info!(
                "retention RequestId={request_id}: retired {removed} of {} key pair(s) on token {:?}",
                pruned.len(),
                self.label
            );
        }
        Ok(())
    }

    /// Records on `key`'s public key that a renewal replaced it today
    /// (CKA_END_DATE), for `replaced_after_days`; the dates live on the
    /// public key (see `inventory::list_keys`).
    ///
    /// # Errors
    /// A token error when the key has no public object or the token
    /// refuses the change.
    pub fn mark_replaced(&mut self, key: &KeyEntry) -> Result<()> {
        let session = self.session()?;
        let template = [cryptoki::object::Attribute::EndDate(date_of(Day::today()))];
        let object = key.public_handle().ok_or_else(|| Error::Token {
            op: "recording that a renewal replaced a key (CKA_END_DATE)",
            token: self.label.clone(),
            detail: "the key pair has no public key object".into(),
        })?;
        session
            .update_attributes(object, &template)
            .map_err(|e| Error::Token {
                op: "recording that a renewal replaced a key (CKA_END_DATE)",
                token: self.label.clone(),
                detail: describe(&e),
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        let p: Vec<i64> = s.split('-').map(|x| x.parse().unwrap()).collect();
        Day::from_ymd(p[0], p[1] as u32, p[2] as u32).unwrap()
    }

    fn key(label: &str, id: &[u8], private: bool, public: bool) -> KeyEntry {
        KeyEntry::for_test(label, id, private, public)
    }

    #[test]
    fn dated_policies_count_whole_days_and_spare_certified_keys() {
        let today = day("2026-12-06");
        let mut fresh = key("hsm-csr:a", &[1; 16], true, true);
        fresh.delivered = Some(day("2026-11-07"));
        let mut old = key("hsm-csr:b", &[2; 16], true, true);
        old.delivered = Some(day("2026-11-06"));
        let mut certified = old.clone();
        certified.set_certificates(vec![vec![0x30]]);
        let mut replaced = key("hsm-csr:c", &[3; 16], true, true);
        replaced.replaced = Some(today);
        let undated = key("hsm-csr:d", &[4; 16], true, true);
        let keys = [fresh, old, certified, replaced, undated];
        let policy = Policy {
            never_certified_after_days: Some(30),
            replaced_after_days: Some(0),
            orphans: false,
        };
        let got = select(&keys, &policy, today, "hsm-csr:", None, &mut |_| false);
        let reasons: Vec<(String, Reason)> = got
            .iter()
            .map(|r| (r.key.label.clone(), r.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "hsm-csr:b".to_owned(),
                    Reason::NeverCertified(day("2026-11-06"))
                ),
                ("hsm-csr:c".to_owned(), Reason::Replaced(today)),
            ]
        );
        let later = Policy {
            replaced_after_days: Some(1),
            ..policy
        };
        assert_eq!(
            select(&keys, &later, today, "hsm-csr:", None, &mut |_| false).len(),
            1
        );
        assert!(
            select(
                &keys,
                &Policy::default(),
                today,
                "hsm-csr:",
                None,
                &mut |_| false
            )
            .is_empty()
        );
    }

    #[test]
    fn orphans_are_only_what_hsm_csr_left_half_made() {
        let owner = mark::Owner::this_process(mark::KIND_PROCESS);
        let marked = mark::mark(&owner, &[7; 16]);
        let pool_id = [&pool::POOL_ID_PREFIX[..], &[8; 16]].concat();
        let keys = [
            // Whole and delivered, even with a lone private key: never an orphan.
            key("hsm-csr:whole", &[1; 16], true, true),
            key("hsm-csr:no-public", &[2; 16], true, false),
            // Lone public keys: ours goes, another tool's stays.
            key("hsm-csr:lone", &[3; 16], false, true),
            key("other-tool", &[4; 16], false, true),
            // A whole pool key stays, a torn one goes.
            key("hsm-csr:pool:unassigned", &pool_id, true, true),
            key("hsm-csr:pool:unassigned", &pool_id[..], true, false),
            // Undelivered: only when its process stopped.
            key("hsm-csr:undelivered", &marked, true, true),
            // Neither CKA_ID nor label.
            key("", &[], true, false),
        ];
        let policy = Policy {
            orphans: true,
            ..Policy::default()
        };
        let today = day("2026-12-06");
        let picked = |dead: bool| -> Vec<(usize, Reason)> {
            select(&keys, &policy, today, "hsm-csr:", None, &mut |_| dead)
                .iter()
                .map(|r| {
                    (
                        keys.iter()
                            .position(|k| {
                                k.label == r.key.label
                                    && k.has_public_key == r.key.has_public_key
                                    && k.id_bytes() == r.key.id_bytes()
                            })
                            .unwrap(),
                        r.reason,
                    )
                })
                .collect()
        };
        assert_eq!(
            picked(false),
            [(2, Reason::Lone), (5, Reason::Torn), (7, Reason::Torn)]
        );
        assert_eq!(
            picked(true),
            [
                (2, Reason::Lone),
                (5, Reason::Torn),
                (6, Reason::Torn),
                (7, Reason::Torn)
            ]
        );
        // Another owner's keys are left to their owner's prune.
        let a = Owner::new("A").unwrap();
        assert!(select(&keys, &policy, today, "hsm-csr:", Some(&a), &mut |_| true).is_empty());
    }
}
