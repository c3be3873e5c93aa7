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
//!
//! Turns alone leave a newcomer waiting for a busy session to finish, and
//! then running beside the busy key's calls. So, while another access key
//! has been active (waiting, served, or done within [`LINGER`]), no key
//! holds every session: one stays for the others, and a key that calls
//! one request after another finds it free. With one worker there is
//! nothing to keep; a key alone uses every session.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Tag units per call of a weight-1 key.
const SCALE: u64 = 100;
/// How long a key counts as active after its last call ended.
pub(in crate::service) const LINGER: Duration = Duration::from_secs(1);

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
    /// Each key's finish tag, turns held, and when its last call ended.
    /// Keys are access key ids from the configuration: a bounded set.
    keys: HashMap<String, KeyState>,
    /// Waiting calls by (tag, arrival): their key and how to wake them.
    waiting: BTreeMap<(u64, u64), (String, oneshot::Sender<()>)>,
    arrivals: u64,
}

#[derive(Debug, Default)]
struct KeyState {
    finish: u64,
    held: usize,
    waiting: usize,
    ended: Option<Instant>,
}

impl State {
    /// Whether `key` may take a turn now: a session is free, and it would
    /// not take the last one while another key is active.
    fn may_take(&self, key: &str, capacity: usize, at: Instant) -> bool {
        if self.held >= capacity {
            return false;
        }
        let others_active = self.keys.iter().any(|(k, s)| {
            k != key && (s.held > 0 || s.waiting > 0 || s.ended.is_some_and(|t| at < t + LINGER))
        });
        let held = self.keys.get(key).map_or(0, |s| s.held);
        !(others_active && capacity > 1 && held + 1 >= capacity)
    }

    fn take(&mut self, key: &str, tag: u64) {
        self.held += 1;
        self.now = self.now.max(tag);
        self.keys.entry(key.to_owned()).or_default().held += 1;
    }
}

/// A call's place in the queue while it waits. Dropped without having
/// become a [`Turn`] (its deadline passed, or its handler went away), it
/// leaves the queue and withdraws its tag, or, when the turn had already
/// been handed to it, gives that back: no turn is ever lost.
struct Place<'f> {
    fair: &'f Arc<Fair>,
    key: &'f str,
    place: (u64, u64),
    step: u64,
    armed: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.fair.state();
        if st.waiting.remove(&self.place).is_some() {
            if let Some(ks) = st.keys.get_mut(self.key) {
                ks.waiting = ks.waiting.saturating_sub(1);
                // Never served: its tag is not the key's debt.
                if ks.finish == self.place.0 + self.step {
                    ks.finish = self.place.0;
                }
            }
            // Its key may have been what held the reserve back.
            self.fair.hand_out(&mut st, Instant::now());
        } else {
            drop(st);
            self.fair.give_back(self.key);
        }
    }
}

/// A turn: a call may take a session. Given back when dropped.
#[derive(Debug)]
pub(in crate::service) struct Turn {
    fair: Arc<Fair>,
    key: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.fair.give_back(&self.key);
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

    fn turn_for(self: &Arc<Self>, key: &str) -> Turn {
        Turn {
            fair: Arc::clone(self),
            key: key.to_owned(),
        }
    }

    /// Waits for `key`'s turn (with `weight`) until `deadline`; None when
    /// the deadline passed first.
    pub(in crate::service) async fn turn(
        self: &Arc<Self>,
        key: &str,
        weight: u32,
        deadline: Instant,
    ) -> Option<Turn> {
        let (tx, mut rx) = oneshot::channel();
        let step = SCALE / u64::from(weight.clamp(1, 100));
        let mut place = {
            let mut st = self.state();
            let now = st.now;
            let ks = st.keys.entry(key.to_owned()).or_default();
            let start = ks.finish.max(now);
            ks.finish = start + step;
            if st.waiting.is_empty() && st.may_take(key, self.capacity, Instant::now()) {
                st.take(key, start);
                return Some(self.turn_for(key));
            }
            st.arrivals += 1;
            let place = (start, st.arrivals);
            st.waiting.insert(place, (key.to_owned(), tx));
            if let Some(ks) = st.keys.get_mut(key) {
                ks.waiting += 1;
            }
            // The session the reserve keeps for this key may be free now.
            self.hand_out(&mut st, Instant::now());
            Place {
                fair: self,
                key,
                place,
                step,
                armed: true,
            }
        };
        // A call the reserve holds back is looked at again as the other
        // keys' activity lingers out, not only when a turn is given back.
        loop {
            let recheck = (Instant::now() + LINGER).min(deadline);
            match tokio::time::timeout_at(recheck, &mut rx).await {
                Ok(Ok(())) => {
                    place.armed = false;
                    return Some(self.turn_for(key));
                }
                // The sender went with its queue entry and no turn.
                Ok(Err(_)) => {
                    place.armed = false;
                    return None;
                }
                Err(_) if Instant::now() >= deadline => return None,
                Err(_) => {
                    let mut st = self.state();
                    self.hand_out(&mut st, Instant::now());
                }
            }
        }
        // Dropping `place` (deadline passed, or this future was dropped
        // while it waited) leaves the queue, or gives back a turn that
        // came meanwhile.
    }

    fn give_back(&self, key: &str) {
        let mut st = self.state();
        st.held = st.held.saturating_sub(1);
        let at = Instant::now();
        if let Some(ks) = st.keys.get_mut(key) {
            ks.held = ks.held.saturating_sub(1);
            ks.ended = Some(at);
        }
        self.hand_out(&mut st, at);
    }

    /// Gives free sessions to the waiting calls, smallest tag first, each
    /// when its key may take one.
    fn hand_out(&self, st: &mut State, at: Instant) {
        loop {
            let next = st
                .waiting
                .iter()
                .find(|(_, (key, _))| st.may_take(key, self.capacity, at))
                .map(|(place, _)| *place);
            let Some(place) = next else {
                break;
            };
            let Some((key, tx)) = st.waiting.remove(&place) else {
                break;
            };
            if let Some(ks) = st.keys.get_mut(&key) {
                ks.waiting = ks.waiting.saturating_sub(1);
            }
            // A caller that went away (its handler was dropped) is skipped.
            if tx.send(()).is_ok() {
                st.take(&key, place.0);
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
    async fn while_another_key_is_active_one_session_stays_free_for_it() {
        let fair = Fair::new(2);
        let a1 = fair.turn("a", 1, soon()).await.unwrap();
        // b calls one request after another: each finds a session at once.
        for _ in 0..3 {
            let b = fair
                .turn("b", 1, Instant::now() + Duration::from_millis(10))
                .await;
            assert!(b.is_some(), "b waited");
        }
        // a may not take the last session while b lingers...
        let short = Instant::now() + Duration::from_millis(100);
        assert!(fair.turn("a", 1, short).await.is_none());
        // ... and gets it once b's activity has lingered out.
        let a2 = fair.turn("a", 1, soon()).await;
        assert!(a2.is_some(), "no turn came when b had lingered out");
        drop(a1);
        // Alone, a key uses every session.
        let lone = Fair::new(2);
        let _x = lone.turn("a", 1, soon()).await.unwrap();
        let _y = lone
            .turn("a", 1, Instant::now() + Duration::from_millis(10))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_waiting_call_dropped_at_any_moment_loses_no_turn() {
        let fair = Fair::new(1);
        for _ in 0..50 {
            let held = fair.turn("a", 1, soon()).await.unwrap();
            let waiting = {
                let fair = Arc::clone(&fair);
                tokio::spawn(async move { fair.turn("b", 1, soon()).await })
            };
            while fair.waiting() == 0 {
                tokio::task::yield_now().await;
            }
            // The turn is handed to b's call, which is dropped before it
            // can take it.
            drop(held);
            waiting.abort();
            let _ = waiting.await;
            assert_eq!(fair.state().held, 0, "a turn was lost");
            assert_eq!(fair.waiting(), 0);
        }
        assert!(
            fair.turn("c", 1, Instant::now() + Duration::from_millis(50))
                .await
                .is_some()
        );
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
