//! The key pool's refiller, which never competes with callers.
//!
//! A refill is a key generation and five more token calls. Behind a
//! network, or behind `p11-kit server`, which answers one connection's
//! calls one at a time, a caller's call that arrives while the refiller
//! holds the token waits for it: the pool, there to take keygen off the
//! caller's path, would put it back. So the refiller makes its calls only
//! while a worker session is free for the next caller (with one worker: no
//! request in flight), and only once no request has ended for [`QUIET`]
//! (a caller's next call in a row follows within a millisecond); it checks
//! again between the key's generation and its entry into the pool. A
//! caller that arrives during a refill's call waits for that one call (a
//! key generation at worst). While requests that generate on demand keep
//! some sessions busy, refilling on a free one goes on: a drained pool
//! fills again instead of leaving every call to generate its own key (the
//! first version, which waited for all sessions to be free, left a 5/s
//! RSA-2048 soak in process at p50 163 ms against 9.7 ms). It cannot make
//! keys faster than the token does: a load that needs more keys a second
//! than the token makes drains the pool, and then calls generate on
//! demand.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ValidKeyOptions;
use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::pkcs11::orphans::Orphans;
use crate::backend::pkcs11::pool::KeyPool;
use crate::error::Error;

/// How long no caller must have held a session before the refiller
/// makes a call: long enough for a client's next call in a row to arrive
/// (a millisecond or less on a LAN), short enough that a steady load with
/// gaps between calls leaves the refiller nearly all of them (a longer
/// wait drained the pool of a 5 calls/s soak with RSA-2048: 2.6 keys made
/// a second against 4.0).
pub(super) const QUIET: Duration = Duration::from_millis(5);

/// Who is using the token's worker sessions: counted where requests take
/// and give back a session ([`super::SessionPool::on_session`]).
#[derive(Debug)]
pub(super) struct Callers {
    sessions: usize,
    busy: AtomicUsize,
    last: Mutex<Instant>,
}

impl Callers {
    /// Requests on `sessions` worker sessions.
    pub(super) fn new(sessions: usize) -> Self {
        Callers {
            sessions: sessions.max(1),
            busy: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    /// A caller took a session; it gives it back when the guard drops
    /// (a panicking request too).
    pub(super) fn enter(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self)
    }

    /// Whether a worker session is free for the next caller, and no
    /// request has ended for `quiet`.
    pub(super) fn idle_for(&self, quiet: Duration) -> bool {
        self.busy.load(Ordering::SeqCst) < self.sessions
            && self
                .last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                >= quiet
    }

    /// Waits until [`Self::idle_for`] [`QUIET`], or `stop`; false when stopped.
    pub(super) fn wait_idle(&self, stop: &AtomicBool) -> bool {
        while !self.idle_for(QUIET) {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        !stop.load(Ordering::Relaxed)
    }
}

/// A caller holding a session.
#[derive(Debug)]
pub(super) struct Busy<'a>(&'a Callers);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps `pool` at its target on a session of its own, until `stop`,
/// yielding to `callers`.
pub(super) fn spawn(
    pool: Arc<KeyPool>,
    mut backend: Pkcs11Backend,
    key_options: ValidKeyOptions,
    (stop, callers): (Arc<AtomicBool>, Arc<Callers>),
    orphans: Arc<Orphans>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if !pool.wants_more() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let between = || callers.wait_idle(&stop);
            if !between() {
                break;
            }
            match pool.refill(&mut backend, key_options.signature(), &between) {
                Ok(()) => {}
                // The token is as full as the pool may make it: wait
                // quietly for room (the capacity logs the change).
                Err(Error::TokenFull { .. }) => std::thread::sleep(Duration::from_secs(1)),
                Err(e) => {
                    log::warn!("pool refill failed: {} {e}", e.code());
                    orphans.destroy_on(&mut backend);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        orphans.keep(backend.take_orphans());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_or_just_left_is_not_idle() {
        let callers = Callers::new(1);
        let busy = callers.enter();
        assert!(!callers.idle_for(Duration::ZERO));
        drop(busy);
        assert!(callers.idle_for(Duration::ZERO));
        // With two sessions, one request leaves one free.
        let callers = Callers::new(2);
        let one = callers.enter();
        assert!(callers.idle_for(Duration::ZERO));
        let two = callers.enter();
        assert!(!callers.idle_for(Duration::ZERO));
        drop((one, two));
        assert!(!callers.idle_for(Duration::from_secs(60)));
        let stop = AtomicBool::new(true);
        assert!(
            !callers.wait_idle(&stop),
            "a stopped refiller stops waiting"
        );
    }
}
