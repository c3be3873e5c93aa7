//! How many key pairs an access key may own (`max_keys` on
//! `[[service.access_keys]]`), checked on the token before a key is made.
//!
//! The count is the token's own: one search for the owner's private keys
//! ([`KeyInventory::count_owned`], a bounded number of token calls), so it
//! holds across restarts and replicas and sees keys retired by `keys
//! prune`. Keys not yet delivered count: they carry their owner from the
//! moment they are made. Within a process, calls of one owner that are
//! between the count and their keygen hold a place ([`Reservation`]), so
//! two of them cannot both take the last key. With several tokens, the
//! owner's count on the others is the one last read there.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::algorithm::SignatureAlgorithm;
use crate::backend::{GeneratedKey, KeyBackend, KeyInventory, KeySpec};
use crate::error::{Error, Result};
use crate::owner::{Owner, Principal};

/// Who a call is for, and what it may do on the token: what the service
/// hands a token's sessions with every call.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who asks, and which keys it may use.
    pub principal: Principal,
    /// Its key quota, if it has one.
    pub quota: Option<std::sync::Arc<KeyQuota>>,
    /// Most certificates one key keeps (`[service] max_certificates_per_key`).
    pub max_certificates_per_key: usize,
    /// The caller's keys on the other tokens, as their last pass over
    /// every key counted them (0 with one token).
    pub elsewhere: usize,
}

impl Caller {
    /// The local operator: owns what it makes as `owner`, may use every
    /// key, has no quota.
    pub fn operator(owner: Owner, max_certificates_per_key: usize) -> Caller {
        Caller {
            principal: Principal::operator(owner),
            quota: None,
            max_certificates_per_key,
            elsewhere: 0,
        }
    }

    /// A place for one more key, when the caller has a quota: see
    /// [`KeyQuota::reserve`].
    ///
    /// # Errors
    /// As [`KeyQuota::reserve`].
    pub fn reserve(
        &self,
        inventory: &mut dyn KeyInventory,
        store: &str,
    ) -> Result<Option<Reservation<'_>>> {
        self.quota
            .as_deref()
            .map(|q| q.reserve(inventory, &self.principal.owner, store, self.elsewhere))
            .transpose()
    }
}

/// One owner's key quota.
#[derive(Debug)]
pub struct KeyQuota {
    max_keys: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Calls between their count and their keygen.
    in_flight: usize,
    /// The owner's keys, as last counted on each store.
    counted: HashMap<String, usize>,
}

impl KeyQuota {
    /// At most `max_keys` key pairs.
    pub fn new(max_keys: usize) -> KeyQuota {
        KeyQuota {
            max_keys,
            state: Mutex::default(),
        }
    }

    /// The limit.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Counts `owner`'s keys on `inventory` (the store named `store`),
    /// adds those on the other stores (at least `elsewhere`), and holds a
    /// place for one more until the returned [`Reservation`] is dropped
    /// (see `Reserved`).
    ///
    /// # Errors
    /// `QuotaExceeded.Key` when the owner has `max_keys` keys already (or
    /// places held for them); a store error when the count fails.
    pub fn reserve(
        &self,
        inventory: &mut dyn KeyInventory,
        owner: &Owner,
        store: &str,
        elsewhere: usize,
    ) -> Result<Reservation<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let here = inventory.count_owned(owner, self.max_keys)?;
        state.counted.insert(store.to_owned(), here);
        // The other stores: as this process last counted them there, or as
        // their last pass over every key did (after a restart, the only
        // count there is).
        let others: usize = state
            .counted
            .iter()
            .filter(|(s, _)| s.as_str() != store)
            .map(|(_, n)| n)
            .sum();
        let total = here + others.max(elsewhere) + state.in_flight;
        if total >= self.max_keys {
            return Err(Error::KeyQuotaExceeded {
                limit: self.max_keys,
            });
        }
        state.in_flight += 1;
        Ok(Reservation { quota: Some(self) })
    }

    fn release(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// A place held for one key of an owner; given back when dropped.
#[derive(Debug)]
pub struct Reservation<'q> {
    quota: Option<&'q KeyQuota>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(q) = self.quota.take() {
            q.release();
        }
    }
}

/// A backend whose next keygen gives back `reservation` as soon as it
/// returns: the new key is then on the token, where the count sees it.
pub(crate) struct Reserved<'a, 'q> {
    /// The backend keys are made on.
    pub backend: &'a mut dyn KeyBackend,
    /// The place held for the key.
    pub reservation: Option<Reservation<'q>>,
}

impl KeyBackend for Reserved<'_, '_> {
    fn generate(&mut self, spec: &KeySpec) -> Result<GeneratedKey> {
        let made = self.backend.generate(spec);
        drop(self.reservation.take());
        made
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
    fn settle(&mut self, key: &GeneratedKey) -> Result<()> {
        self.backend.settle(key)
    }
    fn forget(&mut self, key: &GeneratedKey) {
        self.backend.forget(key);
    }
    fn store_certificate(&mut self, key: &GeneratedKey, cert_der: &[u8]) -> Result<()> {
        self.backend.store_certificate(key, cert_der)
    }
}
