//! Replay and flow control: signature nonces seen within the timestamp
//! window, and a sliding one-second window of calls per access key.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Nonces seen in the last `window`, per access key.
#[derive(Debug, Default)]
pub struct Nonces {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl Nonces {
    /// Records `nonce` for `key`; false when it was seen within `window`.
    pub fn first_use(&self, key: &str, nonce: &str, window: Duration) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, t| now.duration_since(*t) < window);
        }
        match seen.get(&(key.to_owned(), nonce.to_owned())) {
            Some(t) if now.duration_since(*t) < window => false,
            _ => {
                seen.insert((key.to_owned(), nonce.to_owned()), now);
                true
            }
        }
    }
}

/// At most `limit` calls in any one-second window, per access key.
#[derive(Debug)]
pub struct RateLimit {
    limit: usize,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimit {
    /// `limit` calls per second per key.
    pub fn new(limit: u32) -> Self {
        RateLimit {
            limit: limit as usize,
            calls: Mutex::default(),
        }
    }

    /// Counts a call by `key`; false when it is over the limit (and is not counted).
    pub fn admit(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let q = calls.entry(key.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            q.pop_front();
        }
        if q.len() >= self.limit {
            return false;
        }
        q.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_per_key() {
        let n = Nonces::default();
        let w = Duration::from_secs(900);
        assert!(n.first_use("a", "1", w));
        assert!(!n.first_use("a", "1", w));
        assert!(n.first_use("b", "1", w));
    }

    #[test]
    fn at_most_limit_per_second() {
        let r = RateLimit::new(100);
        let admitted = (0..150).filter(|_| r.admit("a")).count();
        assert_eq!(admitted, 100);
        assert!(r.admit("b"));
    }
}
