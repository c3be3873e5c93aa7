//! Replay and flow control: signature nonces seen within the timestamp
//! window, and a sliding one-second window of calls per access key.
//!
//! Two implementations answer the same question, "may this call go on?":
//! `memory`, one process's own (the default), and `shared`, in Redis
//! when `[service] redis_url` is set, so that every replica sees the same
//! windows and the same nonces. Their meaning is the same: every correctly
//! signed call is checked against its caller's window; a call over the
//! limit is refused and not counted, and its nonce is not recorded; an
//! admitted call is counted, whatever happens to it afterwards, and its
//! nonce (when its timestamp is within the window) is recorded once.

mod memory;
mod shared;

use std::time::Duration;

pub use memory::{Nonces, RateLimit};
pub use shared::SharedLimits;

/// Why a call may not go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over the caller's rate: the window admits a call again after this.
    Throttled(Duration),
    /// The nonce was seen within its lifetime.
    NonceUsed,
    /// The shared state could not be read or written: the call is refused
    /// (fail closed), since its nonce could not be recorded.
    Unreachable,
}

/// The rate limit and the nonce record, in memory or shared.
#[derive(Debug)]
pub enum Limits {
    /// This process's own.
    Memory {
        /// Calls per access key in the last second.
        rate: RateLimit,
        /// Nonces seen.
        nonces: Nonces,
    },
    /// Shared by every replica, in Redis.
    Shared(SharedLimits),
}

impl Limits {
    /// In memory, `rate_limit` calls per second per access key.
    pub fn in_memory(rate_limit: u32) -> Limits {
        Limits::Memory {
            rate: RateLimit::new(rate_limit),
            nonces: Nonces::default(),
        }
    }

    /// Counts a call by `access_key` against its rate and, when admitted
    /// and `nonce` is given, records the nonce for `lifetime`. Shared, both
    /// take one round trip to Redis.
    ///
    /// # Errors
    /// The [`Refusal`]: throttled, nonce seen, or shared state unreachable.
    pub async fn admit(
        &self,
        access_key: &str,
        nonce: Option<&str>,
        lifetime: Duration,
    ) -> Result<(), Refusal> {
        match self {
            Limits::Memory { rate, nonces } => {
                rate.admit(access_key).map_err(Refusal::Throttled)?;
                match nonce {
                    Some(n) if !nonces.first_use(access_key, n, lifetime) => {
                        Err(Refusal::NonceUsed)
                    }
                    _ => Ok(()),
                }
            }
            Limits::Shared(shared) => shared.admit(access_key, nonce, lifetime).await,
        }
    }

    /// None in memory; shared, whether Redis answers now.
    pub async fn shared_state_reachable(&self) -> Option<bool> {
        match self {
            Limits::Memory { .. } => None,
            Limits::Shared(shared) => Some(shared.ping().await),
        }
    }

    /// Shared, watches Redis for as long as the service runs, so that its
    /// loss and return are logged, counted and reconnected without waiting
    /// for a call; in memory, returns at once.
    pub async fn watch(&self) {
        if let Limits::Shared(shared) = self {
            shared.watch().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-memory pair keeps the order of the checks: a throttled call
    /// records no nonce; an admitted call without a nonce (an expired
    /// timestamp) still counts.
    #[tokio::test]
    async fn throttled_calls_record_no_nonce_and_count_nothing() {
        let limits = Limits::in_memory(2);
        let life = Duration::from_secs(60);
        assert_eq!(limits.admit("a", Some("n1"), life).await, Ok(()));
        assert_eq!(limits.admit("a", None, life).await, Ok(()));
        assert!(matches!(
            limits.admit("a", Some("n2"), life).await,
            Err(Refusal::Throttled(_))
        ));
        let Limits::Memory { nonces, .. } = &limits else {
            unreachable!()
        };
        assert_eq!(nonces.len(), 1, "only the admitted call's nonce");
        assert!(limits.shared_state_reachable().await.is_none());
    }

    #[tokio::test]
    async fn a_nonce_is_refused_the_second_time() {
        let limits = Limits::in_memory(10);
        let life = Duration::from_secs(60);
        assert_eq!(limits.admit("a", Some("n"), life).await, Ok(()));
        assert_eq!(
            limits.admit("a", Some("n"), life).await,
            Err(Refusal::NonceUsed)
        );
        assert_eq!(limits.admit("b", Some("n"), life).await, Ok(()));
    }
}
