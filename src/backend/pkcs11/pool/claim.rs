//! Changing a key pair's identity: one path for every key hsm-csr hands
//! over (a new key leaving its "not yet delivered" mark, a pool key being
//! delivered) and for a new pool key joining the pool.
//!
//! A claim gives both objects a CKA_ID, reads it back (a token may answer
//! CKR_OK and keep the old value), then gives both a CKA_LABEL. It is two
//! C_SetAttributeValue calls, not a compare-and-swap: between replicas,
//! who may take a pool key is decided first by the
//! [`Coordinator`](super::super::mark::Coordinator) (an atomic `SET NX` in
//! Redis), and the winner checks the key still carries its pool ID.

use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::Session;

use super::{KeyPool, POOL_ID_PREFIX, PooledKey};
use crate::backend::pkcs11::keygen::{self, Pair};
use crate::backend::pkcs11::{Pkcs11Backend, describe, mark, uri};
use crate::backend::{GeneratedKey, KeySpec};
use crate::error::{Error, Result};
use crate::owner::Owner;

/// Why a claim failed, and whether the token said it never will succeed.
pub(in crate::backend::pkcs11) struct ClaimFailed {
    pub(in crate::backend::pkcs11) detail: crate::error::Detail,
    pub(in crate::backend::pkcs11) refused: bool,
}

type Claim = std::result::Result<(), ClaimFailed>;

/// Sets the public template on the public object, then the private one
/// on the private object.
fn set_both(
    session: &Session,
    pair: Pair,
    (public, private): (&[Attribute], &[Attribute]),
    what: &str,
) -> Claim {
    for (object, template) in [(pair.public, public), (pair.private, private)] {
        session
            .update_attributes(object, template)
            .map_err(|e| ClaimFailed {
                detail: describe(&e).context(what),
                // The token will never make this change, as opposed to a
                // failure of this one call.
                refused: matches!(
                    e,
                    P11Error::Pkcs11(
                        RvError::AttributeReadOnly
                            | RvError::ActionProhibited
                            | RvError::AttributeTypeInvalid
                            | RvError::AttributeValueInvalid
                            | RvError::TemplateInconsistent
                            | RvError::FunctionNotSupported,
                        _
                    )
                ),
            })?;
    }
    Ok(())
}

/// Whether both objects of `pair` carry CKA_ID `id` now.
fn carries(session: &Session, pair: Pair, id: &[u8]) -> std::result::Result<bool, P11Error> {
    for object in [pair.private, pair.public] {
        let kept = session.get_attributes(object, &[AttributeType::Id])?;
        if !matches!(kept.as_slice(), [Attribute::Id(have)] if have == id) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gives both objects of `pair` CKA_ID `id` and CKA_LABEL `label` (and
/// `owner` as CKA_SUBJECT with today as CKA_START_DATE, when given), one
/// C_SetAttributeValue per object, public first, then reads both CKA_IDs
/// back. A claim cut off half-way leaves the private key under its old
/// CKA_ID (a mark, which a sweep finds with the public half through
/// [`mark::every_form`]); at worst a lone public key object, never a lone
/// private one.
pub(in crate::backend::pkcs11) fn claim(
    session: &Session,
    pair: Pair,
    id: &[u8],
    label: &str,
    owner: Option<&Owner>,
) -> Claim {
    let mut template = vec![
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    // A pool key gets its owner in the same calls that take it, and the
    // day on its public key (see `inventory::list_keys`).
    let mut public = template.clone();
    if let Some(owner) = owner {
        template.push(Attribute::Subject(owner.to_subject_der()));
        public.push(Attribute::Subject(owner.to_subject_der()));
        let today = crate::backend::pkcs11::inventory::date_of(crate::retention::Day::today());
        public.push(Attribute::StartDate(today));
    }
    set_both(
        session,
        pair,
        (&public, &template),
        "setting CKA_ID and CKA_LABEL",
    )?;
    match carries(session, pair, id) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ClaimFailed {
            detail: "the token took a new CKA_ID but kept the old one".into(),
            refused: true,
        }),
        Err(e) => Err(ClaimFailed {
            detail: describe(&e).context("reading back a new CKA_ID"),
            refused: false,
        }),
    }
}

/// What taking a pool key gave.
pub(super) enum Taken {
    /// The key, claimed for this process; settled at delivery.
    Key(GeneratedKey),
    /// Another replica claimed it first: it is dropped from this pool.
    Lost,
}

impl Pkcs11Backend {
    /// Takes `pooled` for a caller: claims it through the coordinator,
    /// checks it still carries its pool ID, marks it as this process's and
    /// not yet delivered ([`mark`]), and lets this session sign with it.
    /// [`crate::backend::KeyBackend::settle`] gives it its final CKA_ID (the
    /// random part of the pool ID) at delivery.
    ///
    /// # Errors
    /// When the coordinator cannot record the claim (Redis unreachable):
    /// the key goes back to the pool, and the caller generates on demand.
    /// When the mark cannot be set: the key is destroyed.
    pub(super) fn assign(
        &mut self,
        pool: &KeyPool,
        pooled: PooledKey,
        spec: &KeySpec,
    ) -> Result<Taken> {
        let label = spec.label.as_str();
        let pool_id = pooled.key.id.clone();
        match self.coordinator.claim(&self.serial, &pool_id) {
            Ok(true) => {}
            Ok(false) => return Ok(Taken::Lost),
            Err(e) => {
                if let Some(unused) = pool.put(pooled, false) {
                    self.discard(unused, &[]);
                }
                return Err(e);
            }
        }
        let still = self
            .session()
            .ok()
            .and_then(|s| carries(s, pooled.pair, &pool_id).ok());
        if still != Some(true) {
            // Taken (or removed) by someone else before our claim: ours is
            // left to expire.
            return Ok(Taken::Lost);
        }
        let final_id = pool_id[POOL_ID_PREFIX.len()..].to_vec();
        let marked = mark::mark(&self.coordinator.owner(), &final_id);
        let claimed = match self.session() {
            Ok(s) => claim(
                s,
                pooled.pair,
                &marked,
                &spec.undelivered_label,
                spec.owner.as_ref(),
            ),
            Err(e) => Err(ClaimFailed {
                detail: e.to_string().into(),
                refused: false,
            }),
        };
        if let Err(failed) = claimed {
            self.discard(pooled, &[marked]);
            if failed.refused {
                self.turn_off(pool, failed.detail.as_str());
            }
            return Err(Error::Token {
                op: "taking a key from the pool (C_SetAttributeValue)",
                token: self.label.clone(),
                detail: failed.detail,
            });
        }
        let mut key = pooled.key;
        key.uri = uri::private_key_uri(&self.label, &self.serial, label, &final_id);
        key.id = final_id;
        label.clone_into(&mut key.label);
        self.made.push(pooled.pair);
        self.unsettled.push((pooled.pair, marked));
        Ok(Taken::Key(key))
    }

    /// Gives a new pool key its pool ID and the pool's label, in place of
    /// its mark `on_token`.
    pub(super) fn enter_pool(&mut self, pooled: &PooledKey, on_token: &[u8]) -> Result<()> {
        if on_token == pooled.key.id.as_slice() {
            return Ok(());
        }
        let entered = match self.session() {
            Ok(s) => claim(s, pooled.pair, &pooled.key.id, &pooled.key.label, None),
            Err(e) => Err(ClaimFailed {
                detail: e.to_string().into(),
                refused: false,
            }),
        };
        entered.map_err(|failed| {
            if failed.refused {
                self.marks_refused
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Error::Token {
                op: "putting a new key in the pool (C_SetAttributeValue)",
                token: self.label.clone(),
                detail: failed.detail,
            }
        })
    }

    /// Destroys a pool key nobody will get. When that fails, remembers its
    /// CKA_ID and `other_ids` (IDs it may carry by now) as orphans (see
    /// [`super::super::orphans`]).
    pub(super) fn discard(&mut self, pooled: PooledKey, other_ids: &[Vec<u8>]) {
        let destroyed = self
            .session()
            .map_err(|e| e.to_string())
            .and_then(|session| keygen::destroy_pair(session, pooled.pair));
        if destroyed.is_ok() {
            self.give_room(2);
        }
        if let Err(e) = destroyed {
            log::warn!("could not destroy an unusable pool key, will retry: {e}");
            self.orphans.push(pooled.key.id);
            for id in other_ids {
                self.orphans.extend(mark::every_form(id));
            }
        }
    }

    /// Turns `pool` off after the token refused to change a CKA_ID, and
    /// destroys its ready keys.
    pub(super) fn turn_off(&mut self, pool: &KeyPool, why: &str) {
        let Some(ready) = pool.turn_off() else {
            return;
        };
        log::error!(
            "key pool turned off: token {:?} refused to change a key's CKA_ID ({why}). A pool \
             key is delivered by changing its CKA_ID, then its CKA_LABEL, and no key is handed \
             out unclaimed. Requests generate keys on demand; set [pool] size = 0 for this \
             token. Destroying {} ready pool key(s).",
            self.label,
            ready.len()
        );
        for pooled in ready {
            self.discard(pooled, &[]);
        }
    }
}
