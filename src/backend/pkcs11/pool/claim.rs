//! Taking a pool key for a caller: the claim through the coordinator, the
//! check that the key still carries its pool ID, and its mark as this
//! process's key not yet delivered, by the identity changes of
//! [`relabel`](super::super::relabel).
//!
//! It is not a compare-and-swap: between replicas, who may take a pool key
//! is decided first by the [`Coordinator`](super::super::mark::Coordinator)
//! (an atomic set-if-unset in Redis), and the winner checks the key still
//! carries its pool ID.

use super::{KeyPool, PooledKey};
use crate::backend::pkcs11::id::{self, POOL_ID_PREFIX};
use crate::backend::pkcs11::keygen;
use crate::backend::pkcs11::relabel::{ClaimFailed, Rename, carries, rename};
use crate::backend::pkcs11::{Pkcs11Backend, Unsettled, uri};
use crate::backend::{GeneratedKey, KeySpec};
use crate::error::{Error, Result};

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
    /// not yet delivered ([`mark`](super::super::mark)), and lets this session sign with it.
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
        // Another replica may have claimed it, delivered it and let its
        // claim expire before ours: it no longer carries its pool ID.
        // Without Redis no other process takes this pool's keys.
        if self.coordinator.is_shared() {
            let still = self
                .session()
                .ok()
                .and_then(|s| carries(s, pooled.pair.private, &pool_id).ok());
            if still != Some(true) {
                // Taken (or removed) by someone else before our claim: ours
                // is left to expire.
                return Ok(Taken::Lost);
            }
        }
        let final_id = pool_id
            .strip_prefix(&POOL_ID_PREFIX[..])
            .unwrap_or(&pool_id)
            .to_vec();
        let marked = id::mark(&self.coordinator.owner(), &final_id);
        // The private key alone takes the mark: its public half keeps the
        // pool ID, so the pair is no pool key any more (adoption wants both
        // halves under one pool ID), and a sweep finds that half from the
        // mark. Both get their final identity at delivery.
        let claimed = match self.session() {
            Ok(s) => rename(
                s,
                &self.learned,
                &[
                    Rename::new(pooled.pair.private, &marked, &spec.undelivered_label)
                        .owned(spec.owner.as_ref(), false),
                ],
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
        let public =
            Rename::new(pooled.pair.public, &final_id, label).owned(spec.owner.as_ref(), true);
        let mut key = pooled.key;
        key.uri = uri::private_key_uri(&self.label, &self.serial, label, &final_id);
        key.id = final_id;
        label.clone_into(&mut key.label);
        self.made.push(pooled.pair);
        self.unsettled.push(Unsettled {
            pair: pooled.pair,
            on_token: marked,
            public: Some(public),
        });
        Ok(Taken::Key(key))
    }

    /// Gives a new pool key's private half the pool ID and label its
    /// public half was made with, in place of its mark `on_token`.
    pub(super) fn enter_pool(&mut self, pooled: &PooledKey, on_token: &[u8]) -> Result<()> {
        if on_token == pooled.key.id.as_slice() {
            return Ok(());
        }
        let entered = match self.session() {
            Ok(s) => rename(
                s,
                &self.learned,
                &[Rename::new(
                    pooled.pair.private,
                    &pooled.key.id,
                    &pooled.key.label,
                )],
            ),
            Err(e) => Err(ClaimFailed {
                detail: e.to_string().into(),
                refused: false,
            }),
        };
        entered.map_err(|failed| {
            if failed.refused {
                self.learned
                    .marks_refused
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
                self.orphans.extend(id::every_form(id));
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
