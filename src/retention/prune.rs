//! Retiring by policy over any [`KeyInventory`]: which key pairs a
//! [`Policy`] retires ([`select`]), retiring them ([`prune`]), and
//! `serve`'s periodic pass over every key ([`inventory_pass`]).
//!
//! Never retired: an unassigned pool key, a key not yet delivered whose
//! process still runs (or cannot be judged from here), and anything that
//! is not hsm-csr's own (another label prefix, another CKA_ID form) unless
//! a dated policy names it. A delivered key is retired only by the dated
//! policies the operator chose, never as an orphan, even when a crash left
//! it without its public half: its caller may hold its CSR.

use super::{Day, Policy, Reason};
use crate::audit::{EventKind, Trail};
use crate::backend::{KeyEntry, KeyInventory, KeyState};
use crate::error::Result;
use crate::owner::Owner;

/// How long an orphan candidate waits before it is looked at again: far
/// longer than a claim's two attribute writes take.
const ORPHAN_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

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

/// What each owner (`""` for none) holds, as the last `Inventory` pass
/// found it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerCounts(pub std::collections::BTreeMap<String, Held>);

/// What one owner holds on a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Delivered key pairs.
    pub key_pairs: usize,
    /// Certificates stored beside them.
    pub certificates: usize,
}

impl Held {
    /// Counts `key`, a key pair, and the certificates stored beside it.
    pub(crate) fn add(&mut self, key: &KeyEntry) {
        self.key_pairs += 1;
        self.certificates += key.certificates().len();
    }
}

/// `serve`'s periodic pass over every key of a token (`[retention]`).
#[derive(Debug)]
pub(crate) struct Inventory {
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
    /// The notAfter of each key in use's newest certificate (keys a
    /// renewal replaced left out), for the expiry metrics.
    pub expiries: std::sync::Mutex<Vec<u64>>,
}

/// The keys among `keys` that `policy` retires on `today`; only `owner`'s
/// when given. `state` says what the store's marks make of each key.
pub(crate) fn select(
    keys: &[KeyEntry],
    policy: &Policy,
    today: Day,
    prefix: &str,
    owner: Option<&Owner>,
    state: &dyn Fn(&KeyEntry) -> KeyState,
) -> Vec<Retiring> {
    let mut retiring = Vec::new();
    for key in keys {
        if owner.is_some_and(|o| !key.is_owned_by(o)) {
            continue;
        }
        let whole = key.has_private_key && key.has_public_key;
        let kind = state(key);
        let reason = match kind {
            // Not yet delivered: the sweep's rule, as an orphan.
            KeyState::Undelivered { owner_stopped } => {
                (policy.orphans && owner_stopped).then_some(Reason::Torn)
            }
            // An unassigned pool key is the pool's; a torn one is nobody's.
            KeyState::Pooled => (policy.orphans && !whole).then_some(Reason::Torn),
            KeyState::Delivered if !key.has_private_key => {
                (policy.orphans && ours(key, prefix)).then_some(Reason::Lone)
            }
            // Dated policies retire hsm-csr's keys only: another tool's
            // may carry dates too.
            KeyState::Delivered if key.owner.is_some() || ours(key, prefix) => {
                dated(key, policy, today)
            }
            KeyState::Delivered => None,
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

/// Whether hsm-csr named `key`: its label has `prefix` (and it has a
/// CKA_ID: objects without one are never retired, they cannot be told
/// apart).
fn ours(key: &KeyEntry, prefix: &str) -> bool {
    !prefix.is_empty() && key.label.starts_with(prefix) && !key.id_bytes().is_empty()
}

/// What the dated policies say of a delivered key.
fn dated(key: &KeyEntry, policy: &Policy, today: Day) -> Option<Reason> {
    if let (Some(days), Some(on)) = (policy.replaced_after_days, key.replaced) {
        return (on <= today.minus(days)).then_some(Reason::Replaced(on));
    }
    match (policy.never_certified_after_days, key.delivered) {
        (Some(days), Some(on)) if key.certificates().is_empty() => {
            (on <= today.minus(days)).then_some(Reason::NeverCertified(on))
        }
        _ => None,
    }
}

/// Lists `store` and retires what `policy` says (see `select`),
/// `owner`'s keys only when given; with `act` false, a dry run that
/// removes nothing. Each removal is recorded in `audit` (event `deleted`,
/// cause `Retired...`) once it is done.
///
/// # Errors
/// A store error when it cannot be listed; a failed removal is reported
/// in its [`Pruned`], and the others go on.
pub fn prune(
    store: &mut dyn KeyInventory,
    policy: &Policy,
    prefix: &str,
    owner: Option<&Owner>,
    act: bool,
    audit: Option<&Trail<'_>>,
    request_id: &str,
) -> Result<Vec<Pruned>> {
    let keys = store.list_keys()?;
    prune_listed(
        store,
        &keys,
        policy,
        owner,
        (prefix, act),
        audit,
        request_id,
    )
}

/// [`prune`] over `keys`, a listing of `store`.
fn prune_listed(
    store: &mut dyn KeyInventory,
    keys: &[KeyEntry],
    policy: &Policy,
    owner: Option<&Owner>,
    (prefix, act): (&str, bool),
    audit: Option<&Trail<'_>>,
    request_id: &str,
) -> Result<Vec<Pruned>> {
    let mut retiring = {
        let state = |k: &KeyEntry| store.state_of(k);
        select(keys, policy, Day::today(), prefix, owner, &state)
    };
    // A key whose identity is being changed (a delivery, a pool claim:
    // public object first, then private) can look like a torn pair in a
    // listing that read the two classes a moment apart, or when one
    // object could not be read. Such a look is checked again a moment
    // later on the store itself, and only what still looks so goes.
    let orphaned = |store: &dyn KeyInventory, r: &Retiring| {
        matches!(r.reason, Reason::Lone | Reason::Torn)
            && !matches!(store.state_of(&r.key), KeyState::Undelivered { .. })
    };
    // So can the public half of a pair another process is making: its
    // token writes the public object before the private one, and only the
    // private one's mark joins them in a listing. Hence a second listing
    // after the pause, where such a half has found its marked private key.
    if retiring.iter().any(|r| orphaned(store, r)) {
        std::thread::sleep(ORPHAN_SETTLE);
        let again = store.list_keys()?;
        let still_alone = |key: &KeyEntry| {
            again.iter().any(|k| {
                k.locator() == key.locator()
                    && k.has_private_key == key.has_private_key
                    && k.has_public_key == key.has_public_key
            })
        };
        let mut confirmed = Vec::new();
        for r in retiring {
            if !orphaned(store, &r) || (still_alone(&r.key) && store.confirm_orphan(&r.key)?) {
                confirmed.push(r);
            }
        }
        retiring = confirmed;
    }
    let mut pruned = Vec::new();
    for r in retiring {
        let removed = act.then(|| {
            let done = match store.state_of(&r.key) {
                KeyState::Undelivered { .. } => store.retire_undelivered(&r.key),
                _ => store.delete_key(&r.key),
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

/// One pass over every key of `store`: the per-owner counts, and
/// `[retention]` applied (see [`Inventory`]); the first pass after a start
/// (`at_start`) also removes the orphans a crash left.
///
/// # Errors
/// A store error when it cannot be listed.
pub(crate) fn inventory_pass(
    store: &mut dyn KeyInventory,
    pass: &Inventory,
    at_start: bool,
) -> Result<()> {
    let keys = store.list_keys()?;
    let mut owners = OwnerCounts::default();
    for k in keys
        .iter()
        .filter(|k| k.has_private_key && store.state_of(k) == KeyState::Delivered)
    {
        owners
            .0
            .entry(k.owner.clone().unwrap_or_default())
            .or_default()
            .add(k);
    }
    *pass.owners.lock().unwrap_or_else(|p| p.into_inner()) = owners;
    let expiries = keys
        .iter()
        .filter(|k| k.has_private_key && k.replaced.is_none())
        .filter(|k| store.state_of(k) == KeyState::Delivered)
        .filter_map(|k| {
            k.certificates()
                .iter()
                .filter_map(|der| crate::certificate::ParsedCertificate::parse(der).ok())
                .map(|c| c.not_after_unix())
                .max()
        })
        .collect();
    *pass.expiries.lock().unwrap_or_else(|p| p.into_inner()) = expiries;
    // At start, what a crash left half made goes whatever the policy: a
    // torn pool key the pool will never adopt, a lone public key.
    let policy = Policy {
        orphans: pass.policy.orphans || at_start,
        ..pass.policy.clone()
    };
    if policy.is_empty() {
        return Ok(());
    }
    let trail = pass.audit.as_ref().map(|log| Trail {
        log,
        actor: crate::audit::Actor::local_user(),
    });
    let request_id = crate::issue::new_request_id();
    let pruned = prune_listed(
        store,
        &keys,
        &policy,
        None,
        (&pass.prefix, true),
        trail.as_ref(),
        &request_id,
    )?;
    let removed = pruned
        .iter()
        .filter(|p| matches!(p.removed, Some(Ok(()))))
        .count();
    if !pruned.is_empty() {
        log::info!(
            "retention RequestId={request_id}: retired {removed} of {} key pair(s) on {:?}",
            pruned.len(),
            store.store_name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::pkcs11::id;

    /// What the PKCS#11 backend's marks make of a key, with undelivered
    /// keys' owners `stopped`.
    fn marks(stopped: bool) -> impl Fn(&KeyEntry) -> KeyState {
        move |k| {
            if id::decode(k.id_bytes()).is_some() {
                KeyState::Undelivered {
                    owner_stopped: stopped,
                }
            } else if id::is_pool_id(k.id_bytes()) {
                KeyState::Pooled
            } else {
                KeyState::Delivered
            }
        }
    }

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
        // Another tool's key with old dates: not hsm-csr's to retire.
        let mut foreign = key("other-tool", &[5; 16], true, true);
        foreign.delivered = Some(day("2020-01-01"));
        foreign.replaced = Some(day("2020-01-01"));
        let keys = [fresh, old, certified, replaced, undated, foreign];
        let policy = Policy {
            never_certified_after_days: Some(30),
            replaced_after_days: Some(0),
            orphans: false,
        };
        let got = select(&keys, &policy, today, "hsm-csr:", None, &marks(false));
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
            select(&keys, &later, today, "hsm-csr:", None, &marks(false)).len(),
            1
        );
        assert!(
            select(
                &keys,
                &Policy::default(),
                today,
                "hsm-csr:",
                None,
                &marks(false)
            )
            .is_empty()
        );
    }

    #[test]
    fn orphans_are_only_what_hsm_csr_left_half_made() {
        let owner = id::Owner::this_process(id::KIND_PROCESS);
        let marked = id::mark(&owner, &[7; 16]);
        let pool_id = [&id::POOL_ID_PREFIX[..], &[8; 16]].concat();
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
            select(&keys, &policy, today, "hsm-csr:", None, &marks(dead))
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
        // Objects with neither CKA_ID nor label cannot be told apart (they
        // are listed as one group): never retired.
        assert_eq!(picked(false), [(2, Reason::Lone), (5, Reason::Torn)]);
        assert_eq!(
            picked(true),
            [(2, Reason::Lone), (5, Reason::Torn), (6, Reason::Torn)]
        );
        // Another owner's keys are left to their owner's prune.
        let a = Owner::new("A").unwrap();
        assert!(select(&keys, &policy, today, "hsm-csr:", Some(&a), &marks(true)).is_empty());
    }
}
