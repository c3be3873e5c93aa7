//! How full the token is, against what its operator says it holds
//! (`[token] max_objects`): a YubiHSM 2 holds 256 objects, an HSM
//! partition its object quota, and a token that runs out fails every
//! caller with a raw `CKR_DEVICE_MEMORY` or `CKR_FUNCTION_FAILED`.
//!
//! The count is read from the token with one search when the token is
//! opened and at every periodic sweep (see [`super::sweep`]), and moved by
//! what this process makes and removes in between; another process's
//! changes show at the next count. Before a key pair (2 objects) or a
//! certificate (1) would pass `max_objects`, it is refused with
//! `ServiceUnavailable` ([`crate::Error::TokenFull`]) and nothing is made.
//! The key pool stops refilling earlier, `reserve` objects short of the
//! limit, so that on-demand calls still find room.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// The `max_objects` of a token that is only counted.
pub(crate) const UNLIMITED: usize = usize::MAX;

/// The token's object budget, shared by every session on it.
#[derive(Debug)]
pub(crate) struct Capacity {
    max_objects: usize,
    reserve: AtomicUsize,
    objects: AtomicUsize,
    /// Whether the last attempt found it full (logged once per change).
    full: AtomicBool,
}

impl Capacity {
    /// A token that holds at most `max_objects` ([`UNLIMITED`]: counted
    /// only), of which it holds `objects` now.
    pub(crate) fn new(max_objects: usize, objects: usize) -> Capacity {
        Capacity {
            max_objects,
            reserve: AtomicUsize::new(0),
            objects: AtomicUsize::new(objects),
            full: AtomicBool::new(false),
        }
    }

    /// `max_objects`; None for a token counted for `/metrics` only.
    #[cfg_attr(
        not(feature = "service"),
        allow(dead_code, reason = "only serve's /metrics and /healthz read it")
    )]
    pub(crate) fn max_objects(&self) -> Option<usize> {
        (self.max_objects != UNLIMITED).then_some(self.max_objects)
    }

    /// Up to how many objects to count: `max_objects`, or all of them.
    pub(crate) fn count_limit(&self) -> usize {
        self.max_objects
    }

    /// Objects on the token, as last counted and moved since.
    pub(crate) fn objects(&self) -> usize {
        self.objects.load(Ordering::Relaxed)
    }

    /// Keeps `reserve` objects free of pool keys.
    pub(crate) fn set_reserve(&self, reserve: usize) {
        self.reserve.store(reserve, Ordering::Relaxed);
    }

    /// A new count read from the token.
    pub(crate) fn counted(&self, objects: usize) {
        self.objects.store(objects, Ordering::Relaxed);
    }

    /// Takes room for `n` objects, for a pool key (which must leave the
    /// reserve free) or not.
    ///
    /// # Errors
    /// `ServiceUnavailable` ([`Error::TokenFull`]) when there is none;
    /// nothing is taken then.
    pub(crate) fn take(&self, n: usize, for_pool: bool, token: &str) -> Result<()> {
        let limit = if for_pool {
            self.max_objects
                .saturating_sub(self.reserve.load(Ordering::Relaxed))
        } else {
            self.max_objects
        };
        let taken = self
            .objects
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |have| {
                (have.saturating_add(n) <= limit).then_some(have + n)
            });
        match taken {
            Ok(_) => {
                if !for_pool && self.full.swap(false, Ordering::Relaxed) {
                    log::warn!(
                        "token {token:?} has room again: {} objects of max_objects {}",
                        self.objects(),
                        self.max_objects
                    );
                }
                Ok(())
            }
            Err(have) if for_pool => Err(Error::TokenFull {
                token: token.to_owned(),
                objects: have,
                max_objects: limit,
            }),
            Err(have) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "token {token:?} is full: {have} objects of [token] max_objects {}; \
                         calls that need room are refused with 503 ServiceUnavailable until \
                         keys are retired (hsm-csr keys prune) or max_objects is raised",
                        self.max_objects
                    );
                }
                Err(Error::TokenFull {
                    token: token.to_owned(),
                    objects: have,
                    max_objects: self.max_objects,
                })
            }
        }
    }

    /// `n` objects were removed (or never made).
    pub(crate) fn give_back(&self, n: usize) {
        let _ = self
            .objects
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |have| {
                Some(have.saturating_sub(n))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_taken_up_to_the_limit_and_the_pool_stops_short_of_it() {
        let c = Capacity::new(10, 4);
        c.set_reserve(2);
        c.take(2, true, "t").unwrap();
        c.take(2, true, "t").unwrap();
        // The pool stops at 8, leaving the reserve of 2.
        c.take(1, true, "t").unwrap_err();
        assert_eq!(c.objects(), 8);
        c.take(2, false, "t").unwrap();
        let e = c.take(1, false, "t").unwrap_err();
        assert_eq!(e.code(), "ServiceUnavailable");
        assert!(!e.to_string().contains("CKR_"), "{e}");
        assert_eq!(c.objects(), 10);
        c.give_back(3);
        c.take(1, false, "t").unwrap();
        c.counted(3);
        assert_eq!(c.objects(), 3);
        c.give_back(5);
        assert_eq!(c.objects(), 0);
    }
}
