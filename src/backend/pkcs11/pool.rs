//! Key pairs made ahead of time, so that a request costs a signature
//! instead of a prime search.
//!
//! Pool keys are ordinary token keys (sensitive, never extractable).
//!
//! **What marks a pool key is its CKA_ID**: `POOL_ID_PREFIX` followed by
//! 16 random bytes, the same on both objects of the pair.
//! Every delivered key has a CKA_ID of exactly 16 random bytes (and one
//! not yet delivered a 32-byte `mark`), and nothing a caller sends (common name, label prefix, any parameter)
//! chooses a CKA_ID, so no request can make a key that looks unassigned.
//! The CKA_LABEL, `<label_prefix>pool:unassigned`, is for people; it also
//! keeps apart the pools of `serve` processes that use different label
//! prefixes on one token, but a label alone never makes a pool key.
//!
//! **Assignment is a claim, then a mark, then a relabel at delivery.** A
//! request takes a ready key; the `Coordinator`
//! claims it (in-process: always; with Redis: an atomic set-if-unset that one
//! replica wins, the others drop the key and take another); the winner
//! (with replicas sharing Redis) checks the key still carries its pool
//! CKA_ID, then gives its private key its own "not yet delivered"
//! `mark` over the pool ID's 16 random bytes `R` (`claim`):
//! from then on nothing adopts it again (adoption wants both halves under
//! one pool ID), and should the process die, a sweep removes both halves.
//! At delivery ([`KeyBackend::settle`]) both objects get CKA_ID `R` and the
//! request's label, public key first. The public key was read when the key
//! was made: a pooled CSR is five token calls (claim, C_SignInit, C_Sign,
//! two writes). If any step fails the pair is destroyed (or remembered
//! as an orphan when even that fails), and the request generates a key on
//! demand; when the coordinator cannot be reached the key stays in the
//! pool and the request generates on demand (fail closed: no key is
//! relabelled without a claim).
//!
//! PKCS #11 v2.40 marks CKA_ID and CKA_LABEL with note 8 of its common
//! footnotes for object attribute tables: "May be modified after object is
//! created with a C_SetAttributeValue call" — may, not must (AWS CloudHSM
//! changes CKA_LABEL but not CKA_ID). A token that refuses to change
//! CKA_ID, or answers CKR_OK and keeps the old one, turns the pool off for
//! the rest of the run: its ready keys are destroyed and every request
//! generates on demand, under its final CKA_ID from then on (unmarked).
//! No key is handed out unclaimed.
//!
//! **Adoption.** At start (and when the token comes back) a pair already on
//! the token joins the pool only if both objects carry the same pool-shaped
//! CKA_ID, it has the pool's key type and label, no certificate shares its
//! CKA_ID, and its private key shows it was made on the token and never
//! left it (`provenance`): anyone can give an imported key the pool's mark.
//!
//! The shape of the CKA_ID is the key's state: `hsm-pool` + `R`
//! unassigned, a mark while being delivered, `R` delivered. Without Redis a
//! claim is C_SetAttributeValue calls, not a compare-and-swap: two
//! processes that adopted the same key could both claim it. Hence one pool
//! per token and label prefix, unless the replicas share `[service]
//! redis_url`.

pub(super) mod claim;
mod provenance;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Pkcs11Backend;
use super::id::{POOL_ID_PREFIX, is_pool_id};
use super::keygen::{self, Pair};
use crate::algorithm::{KeyType, SignatureAlgorithm};
use crate::backend::{GeneratedKey, KeyBackend, KeySpec};
use crate::error::Result;

/// A pre-generated key pair, not yet given to any request.
#[derive(Debug)]
pub(crate) struct PooledKey {
    pair: Pair,
    key: GeneratedKey,
}

#[derive(Debug, Default)]
struct Ready {
    keys: VecDeque<PooledKey>,
    /// Set when the token refused a claim: no key goes in or out again.
    off: bool,
}

/// The pool: unassigned keys of one type, and counters.
#[derive(Debug)]
pub struct KeyPool {
    ready: Mutex<Ready>,
    /// How many keys the refiller keeps ready.
    pub target: usize,
    /// The key type every pool key has.
    pub key_type: KeyType,
    /// The CKA_LABEL of unassigned pool keys (for people, and to tell this
    /// pool from those of other label prefixes; see the module docs).
    pub unassigned_label: String,
    hits: AtomicU64,
    misses: AtomicU64,
    made: AtomicU64,
    /// Keys another replica claimed first.
    lost: AtomicU64,
}

/// Counters for /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Keys ready now.
    pub depth: usize,
    /// Requests served from the pool.
    pub hits: u64,
    /// Requests that generated on demand.
    pub misses: u64,
    /// Keys the refiller made.
    pub made: u64,
}

impl KeyPool {
    /// An empty pool of `target` keys of `key_type`, labelled `unassigned_label`.
    pub fn new(target: usize, key_type: KeyType, unassigned_label: String) -> Self {
        KeyPool {
            ready: Mutex::default(),
            target,
            key_type,
            unassigned_label,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            made: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ready> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CKA_LABEL of this pool's keys while they are not delivered:
    /// `<label_prefix>undelivered`.
    fn undelivered_label(&self) -> String {
        let prefix = self
            .unassigned_label
            .strip_suffix("pool:unassigned")
            .unwrap_or_default();
        format!("{prefix}undelivered")
    }

    /// Keys ready now.
    pub fn depth(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether the refiller should make another key: the pool is below its
    /// target and the token has not refused a claim.
    pub fn wants_more(&self) -> bool {
        let ready = self.lock();
        !ready.off && ready.keys.len() < self.target
    }

    /// Whether the pool was turned off because the token refused a claim.
    pub fn is_off(&self) -> bool {
        self.lock().off
    }

    /// The counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            depth: self.depth(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            made: self.made.load(Ordering::Relaxed),
        }
    }

    /// Adds a key; `made` says whether the refiller just made it. Gives the
    /// key back when the pool is off.
    fn put(&self, key: PooledKey, made: bool) -> Option<PooledKey> {
        let mut ready = self.lock();
        if ready.off {
            return Some(key);
        }
        if made {
            self.made.fetch_add(1, Ordering::Relaxed);
        }
        ready.keys.push_back(key);
        None
    }

    /// Forgets every ready key (their handles die with the sessions); the
    /// keys stay on the token, unassigned, for [`Self::adopt_existing`].
    pub fn clear(&self) {
        self.lock().keys.clear();
    }

    fn take(&self) -> Option<PooledKey> {
        self.lock().keys.pop_front()
    }

    /// Turns the pool off; returns the ready keys, for the caller to
    /// destroy, or None when it was off already.
    fn turn_off(&self) -> Option<Vec<PooledKey>> {
        let mut ready = self.lock();
        if ready.off {
            return None;
        }
        ready.off = true;
        Some(ready.keys.drain(..).collect())
    }

    /// Makes one pool key on `backend` and adds it to the pool (or destroys
    /// it, should the pool have been turned off meanwhile). Between making
    /// the key and its entry into the pool, waits for `between` (the
    /// refiller yields to callers there); a false from it stops the refill
    /// and destroys the key.
    ///
    /// # Errors
    /// As [`KeyBackend::generate`].
    pub fn refill(
        &self,
        backend: &mut Pkcs11Backend,
        signature: SignatureAlgorithm,
        between: &dyn Fn() -> bool,
    ) -> Result<()> {
        let spec = KeySpec {
            key_type: self.key_type,
            signature,
            label: self.unassigned_label.clone(),
            undelivered_label: self.undelivered_label(),
            owner: None,
        };
        let (key, pair, on_token) = keygen::generate(backend, &spec, &POOL_ID_PREFIX)?;
        let pooled = PooledKey { pair, key };
        if !between() {
            backend.discard(pooled, &[on_token]);
            return Ok(());
        }
        backend.admit(self, pooled, &on_token)
    }

    /// Adopts the unassigned pool keys already on the token: pairs whose
    /// two objects carry the same pool CKA_ID (`is_pool_id`), of this
    /// pool's key type and label, with no certificate, whose private key
    /// never left the token (`provenance`). Returns how many.
    ///
    /// # Errors
    /// A token error when the objects cannot be listed.
    pub fn adopt_existing(&self, backend: &Pkcs11Backend) -> Result<usize> {
        if self.is_off() {
            return Ok(0);
        }
        let (mut adopted, mut passed_over, mut claimed) = (0, 0, 0);
        for entry in backend.list_keys()? {
            if entry.label != self.unassigned_label {
                continue;
            }
            let listed = backend.listed(&entry).unwrap_or_default();
            let (Some(private), Some(public), Some(spki), Some(kt)) = (
                listed.private,
                listed.public,
                entry.spki.clone(),
                entry.parsed_type,
            ) else {
                passed_over += 1;
                continue;
            };
            // Exactly the two key objects: no certificate, no third object
            // with the same CKA_ID.
            if !is_pool_id(&entry.id_bytes)
                || listed.objects.len() != 2
                || kt != self.key_type
                || !provenance::adoptable(backend, &entry.id_bytes, private)
            {
                passed_over += 1;
                continue;
            }
            // Being taken by another replica (or Redis cannot say).
            if !matches!(
                backend
                    .coordinator
                    .claimed(backend.token_serial(), &entry.id_bytes),
                Ok(false)
            ) {
                claimed += 1;
                continue;
            }
            let key = GeneratedKey {
                handles: crate::backend::KeyHandles {
                    private: private.handle(),
                    public: public.handle(),
                },
                key_type: kt,
                spki_der: spki,
                id: entry.id_bytes.clone(),
                label: entry.label.clone(),
                uri: entry.key_uri.clone(),
            };
            let pooled = PooledKey {
                pair: Pair { private, public },
                key,
            };
            if self.put(pooled, false).is_some() {
                return Ok(adopted);
            }
            adopted += 1;
        }
        if claimed > 0 {
            log::info!("key pool: {claimed} pool key(s) claimed by another process, left to it");
        }
        if passed_over > 0 {
            log::warn!(
                "key pool: {passed_over} key pair(s) labelled {:?} were not adopted: only a \
                 {} pair whose two objects carry the pool's CKA_ID mark ({}...), with no \
                 certificate, made on the token and never out of it, is a pool key. They may \
                 be delivered keys whose label matches, keys of an earlier hsm-csr, pool keys \
                 whose claim was cut off, or keys imported under the pool's mark; check \
                 `hsm-csr keys list`",
                self.unassigned_label,
                self.key_type,
                crate::fingerprint::hex(&POOL_ID_PREFIX)
            );
        }
        Ok(adopted)
    }
}

/// A backend that takes keys from `pool` when it can, and generates on
/// demand when the pool is empty, off, or holds another key type.
#[derive(Debug)]
pub struct Pooled<'a> {
    /// The session that signs.
    pub backend: &'a mut Pkcs11Backend,
    /// The pool.
    pub pool: &'a KeyPool,
}

impl KeyBackend for Pooled<'_> {
    fn generate(&mut self, spec: &KeySpec) -> Result<GeneratedKey> {
        if self.backend.learned.marks_refused() {
            self.backend
                .turn_off(self.pool, "a new key's CKA_ID could not be changed");
        }
        if spec.key_type == self.pool.key_type {
            // Keys other replicas claimed first are dropped; a bounded
            // number of tries, then on demand.
            for _ in 0..8 {
                let Some(pooled) = self.pool.take() else {
                    break;
                };
                match self.backend.assign(self.pool, pooled, spec) {
                    Ok(claim::Taken::Key(key)) => {
                        self.pool.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(key);
                    }
                    Ok(claim::Taken::Lost) => {
                        self.pool.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        log::warn!("pool key unusable, generating on demand: {e}");
                        break;
                    }
                }
            }
        }
        self.pool.misses.fetch_add(1, Ordering::Relaxed);
        self.backend.generate(spec)
    }

    fn settle(&mut self, key: &GeneratedKey) -> Result<()> {
        self.backend.settle(key)
    }

    fn sign(
        &mut self,
        key: &GeneratedKey,
        alg: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.backend.sign(key, alg, data)
    }

    fn destroy(&mut self, key: &GeneratedKey) -> Result<()> {
        self.backend.destroy(key)
    }

    fn forget(&mut self, key: &GeneratedKey) {
        self.backend.forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pool_shape_is_a_pool_id() {
        let mut pool_id = POOL_ID_PREFIX.to_vec();
        pool_id.extend([0x5a; 16]);
        assert!(is_pool_id(&pool_id));
        // What on-demand keygen makes: 16 bytes, whatever they are.
        assert!(!is_pool_id(&pool_id[..16]));
        assert!(!is_pool_id(&pool_id[8..]));
        assert!(!is_pool_id(&[0u8; 16]));
        // The prefix with more or fewer random bytes, or another prefix.
        assert!(!is_pool_id(&pool_id[..23]));
        assert!(!is_pool_id(&[pool_id.as_slice(), &[0]].concat()));
        let mut other = pool_id.clone();
        other[0] ^= 1;
        assert!(!is_pool_id(&other));
        assert!(!is_pool_id(&[]));
    }
}
