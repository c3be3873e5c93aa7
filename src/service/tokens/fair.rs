//! Whose call gets the next free worker session: access keys in turn, so
//! that one busy key cannot push another's latency far above what it gets
//! alone.
//!
//! Start-time fair queueing (Goyal, Vin and Cheng, SIGCOMM 1996): each
//! waiting call gets a start tag `max(v, F(key))`, its key's finish tag
//! `F(key)` moves on by `SCALE / weight`, and the call with the smallest
//! tag goes next, `v` becoming its tag. A key that had nothing waiting
//! starts at the current `v`: behind at most the calls already served at
//! that tag, whatever another key has queued. Weights (1 to 100,
//! `weight` on `[[service.access_keys]]`) give a key that many calls per
//! turn of a weight-1 key.
//!
//! At most as many calls hold a turn as there are worker sessions; a turn
//! is given back with the session permit it goes with.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Tag units per call of a weight-1 key.
const SCALE: u64 = 100;

/// The fair queue in front of the sessions.
#[derive(Debug)]
pub(in crate::service) struct Fair {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Turns held.
    held: usize,
    /// Virtual time: the tag of the last call given a turn.
    now: u64,
    /// Each key's finish tag. Keys are access key ids from the
    /// configuration: a bounded set.
    finish: HashMap<String, u64>,
    /// Waiting calls by (tag, arrival).
    waiting: BTreeMap<(u64, u64), oneshot::Sender<()>>,
    arrivals: u64,
}

/// A turn: a call may take a session. Given back when dropped.
#[derive(Debug)]
pub(in crate::service) struct Turn {
    fair: Arc<Fair>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.fair.give_back();
    }
}

impl Fair {
    /// A queue for `capacity` sessions.
    pub(in crate::service) fn new(capacity: usize) -> Arc<Fair> {
        Arc::new(Fair {
            capacity: capacity.max(1),
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `key`'s turn (with `weight`) until `deadline`; None when
    /// the deadline passed first.
    pub(in crate::service) async fn turn(
        self: &Arc<Self>,
        key: &str,
        weight: u32,
        deadline: Instant,
    ) -> Option<Turn> {
        let (tx, rx) = oneshot::channel();
        let place = {
            let mut st = self.state();
            let step = SCALE / u64::from(weight.clamp(1, 100));
            let start = st.finish.get(key).copied().unwrap_or(0).max(st.now);
            st.finish.insert(key.to_owned(), start + step);
            if st.held < self.capacity && st.waiting.is_empty() {
                st.held += 1;
                st.now = start;
                return Some(Turn {
                    fair: Arc::clone(self),
                });
            }
            st.arrivals += 1;
            let place = (start, st.arrivals);
            st.waiting.insert(place, tx);
            place
        };
        let granted = tokio::time::timeout_at(deadline, rx).await;
        if matches!(granted, Ok(Ok(()))) {
            return Some(Turn {
                fair: Arc::clone(self),
            });
        }
        // Timed out: leave the queue, unless the turn came meanwhile, in
        // which case it is passed on.
        let mut st = self.state();
        if st.waiting.remove(&place).is_none() {
            drop(st);
            self.give_back();
        }
        None
    }

    fn give_back(&self) {
        let mut st = self.state();
        st.held = st.held.saturating_sub(1);
        while st.held < self.capacity {
            let Some(((tag, _), tx)) = st.waiting.pop_first() else {
                break;
            };
            // A caller that went away (its handler was dropped) is skipped.
            if tx.send(()).is_ok() {
                st.held += 1;
                st.now = tag;
            }
        }
    }

    /// Calls waiting for a turn.
    #[cfg(test)]
    pub(in crate::service) fn waiting(&self) -> usize {
        self.state().waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Which keys get turns, in order, when `queued` calls wait behind one
    /// busy session.
    async fn order(queued: &[(&'static str, u32)]) -> Vec<&'static str> {
        let fair = Fair::new(1);
        let first = fair.turn("busy", 1, soon()).await.unwrap();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for (key, weight) in queued.iter().copied() {
            let queue = Arc::clone(&fair);
            let done = done_tx.clone();
            tokio::spawn(async move {
                let turn = queue.turn(key, weight, soon()).await.unwrap();
                done.send(key).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(turn);
            });
            // Arrival order is the spawn order.
            let before = fair.waiting();
            while fair.waiting() == before {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        let mut got = Vec::new();
        for _ in queued {
            got.push(done_rx.recv().await.unwrap());
        }
        got
    }

    #[tokio::test]
    async fn a_key_that_arrives_behind_another_keys_queue_goes_next() {
        let mut queued = vec![("a", 1); 10];
        queued.push(("b", 1));
        let got = order(&queued).await;
        let b_at = got.iter().position(|k| *k == "b").unwrap();
        assert!(b_at <= 1, "b served at place {b_at} of {got:?}");
    }

    #[tokio::test]
    async fn weights_give_more_turns() {
        let mut queued = Vec::new();
        for _ in 0..6 {
            queued.push(("a", 1));
            queued.push(("b", 3));
        }
        let got = order(&queued).await;
        // In the first eight turns, b (weight 3) gets about three for a's one.
        let b_first = got[..8].iter().filter(|k| **k == "b").count();
        assert!(b_first >= 5, "{got:?}");
    }

    #[tokio::test]
    async fn a_caller_that_times_out_leaves_the_queue_and_turns_are_not_lost() {
        let fair = Fair::new(1);
        let held = fair.turn("a", 1, soon()).await.unwrap();
        let late = fair
            .turn("b", 1, Instant::now() + Duration::from_millis(20))
            .await;
        assert!(late.is_none());
        assert_eq!(fair.waiting(), 0);
        drop(held);
        assert!(fair.turn("c", 1, soon()).await.is_some());
    }

    #[tokio::test]
    async fn no_more_turns_than_sessions() {
        let fair = Fair::new(2);
        let a = fair.turn("a", 1, soon()).await.unwrap();
        let _b = fair.turn("a", 1, soon()).await.unwrap();
        let third = fair
            .turn("b", 1, Instant::now() + Duration::from_millis(20))
            .await;
        assert!(third.is_none());
        drop(a);
        assert!(fair.turn("b", 1, soon()).await.is_some());
    }
}
