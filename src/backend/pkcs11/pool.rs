//! Key pairs made ahead of time, so that a request costs a signature
//! instead of a prime search.
//!
//! Pool keys are ordinary token keys (sensitive, never extractable) whose
//! CKA_LABEL marks them unassigned. A request takes one and relabels both
//! objects to its own label before signing: from then on the key is
//! assigned, and is never handed out again, across restarts too. At start,
//! unassigned keys already on the token are adopted. A key whose relabel
//! fails is destroyed, and the request falls back to generating on demand.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki::object::Attribute;

use super::keygen::Pair;
use super::{Pkcs11Backend, describe, uri};
use crate::algorithm::{KeyType, SignatureAlgorithm};
use crate::backend::{GeneratedKey, KeyBackend, KeySpec};
use crate::error::{Error, Result};

/// A pre-generated key pair, not yet given to any request.
#[derive(Debug)]
pub struct PooledKey {
    pair: Pair,
    key: GeneratedKey,
}

/// The pool: unassigned keys of one type, and counters.
#[derive(Debug)]
pub struct KeyPool {
    keys: Mutex<VecDeque<PooledKey>>,
    /// How many keys the refiller keeps ready.
    pub target: usize,
    /// The key type every pool key has.
    pub key_type: KeyType,
    /// The CKA_LABEL of unassigned pool keys.
    pub unassigned_label: String,
    hits: AtomicU64,
    misses: AtomicU64,
    made: AtomicU64,
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
            keys: Mutex::default(),
            target,
            key_type,
            unassigned_label,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            made: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<PooledKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys ready now.
    pub fn depth(&self) -> usize {
        self.lock().len()
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

    /// Adds a key; `made` says whether the refiller just made it.
    pub fn put(&self, key: PooledKey, made: bool) {
        if made {
            self.made.fetch_add(1, Ordering::Relaxed);
        }
        self.lock().push_back(key);
    }

    /// Forgets every ready key (their handles die with the sessions); the
    /// keys stay on the token, unassigned, for [`Self::adopt_existing`].
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn take(&self) -> Option<PooledKey> {
        self.lock().pop_front()
    }

    /// Makes one pool key on `backend`.
    ///
    /// # Errors
    /// As [`KeyBackend::generate`].
    pub fn make(
        &self,
        backend: &mut Pkcs11Backend,
        signature: SignatureAlgorithm,
    ) -> Result<PooledKey> {
        let spec = KeySpec {
            key_type: self.key_type,
            signature,
            label: self.unassigned_label.clone(),
        };
        let key = backend.generate(&spec)?;
        let pair = backend.pair(&key)?;
        // The pool owns it now, not this session's bookkeeping.
        backend.made.retain(|p| p.private != pair.private);
        Ok(PooledKey { pair, key })
    }

    /// Adopts the unassigned pool keys already on the token.
    ///
    /// # Errors
    /// A token error when the objects cannot be listed.
    pub fn adopt_existing(&self, backend: &Pkcs11Backend) -> Result<usize> {
        let mut adopted = 0;
        for entry in backend.list_keys()? {
            let (Some(private), Some(public), Some(spki), Some(kt)) = (
                entry.private,
                entry.public,
                entry.spki.clone(),
                entry.parsed_type,
            ) else {
                continue;
            };
            if entry.label != self.unassigned_label || kt != self.key_type || entry.certificate {
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
            self.put(
                PooledKey {
                    pair: Pair { private, public },
                    key,
                },
                false,
            );
            adopted += 1;
        }
        Ok(adopted)
    }
}

impl Pkcs11Backend {
    /// Gives a pool key to the caller: relabels both objects to `label`
    /// (the key is assigned from here on) and lets this session sign with it.
    fn assign(&mut self, pooled: PooledKey, label: &str) -> Result<GeneratedKey> {
        let session = self.session()?;
        let new_label = [Attribute::Label(label.as_bytes().to_vec())];
        let relabelled = session
            .update_attributes(pooled.pair.private, &new_label)
            .and_then(|()| session.update_attributes(pooled.pair.public, &new_label));
        if let Err(e) = relabelled {
            // Half-relabelled or not, this key is never offered again.
            if super::keygen::destroy_pair(session, pooled.pair).is_err() {
                self.unsettled.push(pooled.key.id.clone());
            }
            return Err(Error::Token {
                op: "relabelling a pool key (C_SetAttributeValue)",
                token: self.label.clone(),
                detail: describe(&e),
            });
        }
        let mut key = pooled.key;
        key.label = label.to_owned();
        key.uri = uri::private_key_uri(&self.label, &self.serial, label, &key.id);
        self.made.push(pooled.pair);
        Ok(key)
    }
}

/// A backend that takes keys from `pool` when it can, and generates on
/// demand when the pool is empty or holds another key type.
#[derive(Debug)]
pub struct Pooled<'a> {
    /// The session that signs.
    pub backend: &'a mut Pkcs11Backend,
    /// The pool.
    pub pool: &'a KeyPool,
}

impl KeyBackend for Pooled<'_> {
    fn generate(&mut self, spec: &KeySpec) -> Result<GeneratedKey> {
        if spec.key_type == self.pool.key_type {
            if let Some(pooled) = self.pool.take() {
                match self.backend.assign(pooled, &spec.label) {
                    Ok(key) => {
                        self.pool.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(key);
                    }
                    Err(e) => log::warn!("pool key unusable, generating on demand: {e}"),
                }
            }
        }
        self.pool.misses.fetch_add(1, Ordering::Relaxed);
        self.backend.generate(spec)
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
