//! The tokens a service makes its keys on (`[token]`, or several in
//! `[[tokens]]`), each a `Lane`: its [`Sessions`] and one permit per
//! session.
//!
//! A call is given a session on a token that is not broken, the least
//! busy one (ties in turn, so calls alternate), and never on a broken one:
//! when a token goes away only the calls already on it fail, and new calls
//! go to the others. Each token is reconnected on its own
//! (`Tokens::spawn_reconnects`), holding only its own permits, and
//! rejoins the rotation once its sessions are open again. Each key stays
//! on the token that made it: its `KeyUri` names that token's label and
//! serial.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Sessions;

mod fair;
use crate::backend::pkcs11::pool::PoolStats;
use crate::error::Error;

/// One token: its sessions, one permit per session, and its counters.
pub(super) struct Lane<S> {
    pub(super) sessions: Arc<S>,
    permits: Arc<Semaphore>,
    total: usize,
    /// Its place in the configuration, from 0.
    pub(super) index: usize,
    /// Its configured label (or serial), as [`shown`] prints it.
    pub(super) name: String,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl<S: Sessions> Lane<S> {
    /// Counts a call made on this token.
    pub(super) fn observe(&self, ok: bool) {
        let counter = if ok { &self.ok } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn in_use(&self) -> usize {
        self.total - self.permits.available_permits().min(self.total)
    }
}

/// What the metrics and `/healthz` say of one token.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenStats {
    /// Its place in the configuration, from 0.
    pub index: usize,
    /// Its configured label (or `serial:` and its serial).
    pub name: String,
    /// In rotation: not being reconnected.
    pub up: bool,
    /// Worker sessions.
    pub sessions: usize,
    /// Worker sessions busy.
    pub in_use: usize,
    /// Calls made on it that gave a CSR.
    pub ok: u64,
    /// Calls made on it that failed.
    pub failed: u64,
    /// Its key pool, if any.
    pub pool: Option<PoolStats>,
    /// Objects on it and its `max_objects` (if set), when counted.
    pub capacity: Option<(usize, Option<usize>)>,
}

/// Why no session was given.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NoSession {
    /// Every token is broken.
    Unavailable,
    /// Every session stayed busy until the deadline.
    Timeout,
}

/// The permits a call (or a reconnect) holds on one token; giving them
/// back wakes as many callers waiting for any token.
pub(super) struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
    /// The call's turn ([`fair`]), given back after the permit.
    turn: Option<fair::Turn>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let n = self
            .permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        // Released first: a woken caller must find the permits free.
        drop(self.permit.take());
        for _ in 0..n {
            self.freed.notify_one();
        }
    }
}

/// Every token of the service.
pub(super) struct Tokens<S> {
    lanes: Vec<Lane<S>>,
    /// Who goes next when calls wait for sessions.
    fair: Arc<fair::Fair>,
    /// Where the next call starts looking, so that ties alternate.
    next: AtomicUsize,
    freed: Arc<Notify>,
}

/// How often a caller waiting for a session looks again on its own, in
/// case a token changed state without a permit being given back.
const RECHECK: Duration = Duration::from_millis(250);

/// A token's sessions and the name the configuration gives it (shown by
/// the metrics and `/healthz`).
pub(crate) struct NamedSessions<S> {
    /// The token's sessions.
    pub(crate) sessions: Arc<S>,
    /// Its `[[tokens]]` name, or its label.
    pub(crate) name: String,
}

impl<S: Sessions> Tokens<S> {
    /// The tokens, in configuration order.
    pub(super) fn new(tokens: Vec<NamedSessions<S>>) -> Tokens<S> {
        let lanes = tokens
            .into_iter()
            .enumerate()
            .map(|(index, NamedSessions { sessions, name })| {
                let total = sessions.total();
                Lane {
                    permits: Arc::new(Semaphore::new(total)),
                    total,
                    sessions,
                    index,
                    name: shown(&name),
                    ok: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                }
            })
            .collect::<Vec<Lane<S>>>();
        let sessions = lanes.iter().map(|l| l.total).sum();
        Tokens {
            lanes,
            fair: fair::Fair::new(sessions),
            next: AtomicUsize::new(0),
            freed: Arc::new(Notify::new()),
        }
    }

    pub(super) fn lanes(&self) -> &[Lane<S>] {
        &self.lanes
    }

    /// Worker sessions on all tokens.
    pub(super) fn total(&self) -> usize {
        self.lanes.iter().map(|l| l.total).sum()
    }

    /// Worker sessions busy now, on all tokens.
    pub(super) fn busy(&self) -> usize {
        self.lanes.iter().map(Lane::in_use).sum()
    }

    /// Sessions open in all, pool refillers included.
    pub(super) fn sessions_open(&self) -> usize {
        self.lanes.iter().map(|l| l.sessions.sessions_open()).sum()
    }

    /// The key pools' counters, added up; None without pools.
    pub(super) fn key_pool(&self) -> Option<PoolStats> {
        self.lanes
            .iter()
            .filter_map(|l| l.sessions.key_pool())
            .reduce(|a, b| PoolStats {
                depth: a.depth + b.depth,
                hits: a.hits + b.hits,
                misses: a.misses + b.misses,
                made: a.made + b.made,
            })
    }

    /// Each token's figures, without touching a token.
    pub(super) fn stats(&self) -> Vec<TokenStats> {
        self.lanes
            .iter()
            .map(|l| TokenStats {
                index: l.index,
                name: l.name.clone(),
                up: !l.sessions.is_broken(),
                sessions: l.total,
                in_use: l.in_use(),
                ok: l.ok.load(Ordering::Relaxed),
                failed: l.failed.load(Ordering::Relaxed),
                pool: l.sessions.key_pool(),
                capacity: l.sessions.capacity(),
            })
            .collect()
    }

    /// A session's permit on a token in rotation for a call of access key
    /// `who` (its id and weight), in turn with other access keys' calls
    /// ([`fair`]), waiting until `deadline` while all are busy.
    pub(super) async fn acquire(
        &self,
        who: (&str, u32),
        deadline: Instant,
    ) -> Result<(usize, Permit), NoSession> {
        if self.lanes.iter().all(|l| l.sessions.is_broken()) {
            return Err(NoSession::Unavailable);
        }
        let turn = self
            .fair
            .turn(who.0, who.1, deadline)
            .await
            .ok_or(NoSession::Timeout)?;
        let (index, mut permit) = self.any_permit(deadline).await?;
        permit.turn = Some(turn);
        Ok((index, permit))
    }

    /// A session's permit on a token in rotation, waiting until `deadline`
    /// while all are busy. With one token, callers are served in turn.
    async fn any_permit(&self, deadline: Instant) -> Result<(usize, Permit), NoSession> {
        if let [lane] = self.lanes.as_slice() {
            if lane.sessions.is_broken() {
                return Err(NoSession::Unavailable);
            }
            let acquire = Arc::clone(&lane.permits).acquire_owned();
            return match tokio::time::timeout_at(deadline, acquire).await {
                Ok(Ok(permit)) => Ok((0, self.permit(permit))),
                _ => Err(NoSession::Timeout),
            };
        }
        loop {
            // Registered before looking, so that no permit given back in
            // between goes unnoticed.
            let mut freed = pin!(self.freed.notified());
            freed.as_mut().enable();
            match self.try_acquire() {
                Ok(got) => return Ok(got),
                Err(NoSession::Unavailable) => return Err(NoSession::Unavailable),
                Err(NoSession::Timeout) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NoSession::Timeout);
            }
            let _ = tokio::time::timeout_at(deadline.min(now + RECHECK), freed).await;
        }
    }

    /// A session's permit on token `index`, waiting until `deadline` while
    /// its sessions are busy; `Unavailable` while it is out of rotation.
    pub(super) async fn acquire_on(
        &self,
        index: usize,
        who: (&str, u32),
        deadline: Instant,
    ) -> Result<Permit, NoSession> {
        let Some(lane) = self.lanes.get(index) else {
            return Err(NoSession::Unavailable);
        };
        if lane.sessions.is_broken() {
            return Err(NoSession::Unavailable);
        }
        let turn = self
            .fair
            .turn(who.0, who.1, deadline)
            .await
            .ok_or(NoSession::Timeout)?;
        let acquire = Arc::clone(&lane.permits).acquire_owned();
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => {
                let mut permit = self.permit(permit);
                permit.turn = Some(turn);
                Ok(permit)
            }
            _ => Err(NoSession::Timeout),
        }
    }

    /// A free permit on the least busy token in rotation; `Timeout` when
    /// all such tokens are busy, `Unavailable` when there are none.
    fn try_acquire(&self) -> Result<(usize, Permit), NoSession> {
        let n = self.lanes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut candidates: Vec<&Lane<S>> = self
            .lanes
            .iter()
            .cycle()
            .skip(start)
            .take(n)
            .filter(|l| !l.sessions.is_broken())
            .collect();
        if candidates.is_empty() {
            return Err(NoSession::Unavailable);
        }
        // Stable: among equally busy tokens, the rotation order holds.
        candidates.sort_by_key(|l| std::cmp::Reverse(l.permits.available_permits()));
        for lane in candidates {
            if let Ok(permit) = Arc::clone(&lane.permits).try_acquire_owned() {
                return Ok((lane.index, self.permit(permit)));
            }
        }
        Err(NoSession::Timeout)
    }

    fn permit(&self, permit: OwnedSemaphorePermit) -> Permit {
        Permit {
            permit: Some(permit),
            freed: Arc::clone(&self.freed),
            turn: None,
        }
    }

    /// Starts one reconnect task per token.
    pub(super) fn spawn_reconnects(self: &Arc<Self>) {
        for index in 0..self.lanes.len() {
            tokio::spawn(Arc::clone(self).reconnect_loop(index));
        }
    }

    /// Every half second while token `index` is unreachable, tries to open
    /// it again, holding all of its session permits (and only its own) so
    /// that no call is using one of its sessions.
    async fn reconnect_loop(self: Arc<Self>, index: usize) {
        let Some(lane) = self.lanes.get(index) else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !lane.sessions.is_broken() {
                continue;
            }
            let Ok(held) = Arc::clone(&lane.permits)
                .acquire_many_owned(u32::try_from(lane.total).unwrap_or(u32::MAX))
                .await
            else {
                return;
            };
            let held = self.permit(held);
            let sessions = Arc::clone(&lane.sessions);
            let reopened = tokio::task::spawn_blocking(move || sessions.reopen()).await;
            match reopened {
                Ok(Ok(())) => log::warn!(
                    "token {} ({:?}) is back: sessions reopened",
                    lane.sessions.token_name(),
                    lane.name
                ),
                Ok(Err(
                    e @ (Error::PinIncorrect { .. }
                    | Error::PinLocked { .. }
                    | Error::PinNotInitialized { .. }),
                )) => {
                    // A PIN verdict: retrying would walk the token into lockout.
                    log::error!(
                        "cannot log in again to token {:?} ({} {e}); not retrying. Restart the service with the right PIN.",
                        lane.name,
                        e.code()
                    );
                    return;
                }
                Ok(Err(e)) => {
                    log::warn!("token {:?} still unreachable: {} {e}", lane.name, e.code())
                }
                Err(e) => log::error!("reconnect task of token {:?} failed: {e}", lane.name),
            }
            drop(held);
        }
    }

    /// Each token's state, asked of the token (blocking).
    pub(super) fn health(&self) -> Vec<(usize, String, crate::Result<bool>)> {
        self.lanes
            .iter()
            .map(|l| (l.index, l.name.clone(), l.sessions.health()))
            .collect()
    }
}

/// The `/healthz` answer. Fields are in the order of the JSON object the
/// service always wrote (sorted keys, then `SharedState`).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Health {
    /// The first token's error code, when no token serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<&'static str>,
    /// Whether some token is reachable and logged in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) logged_in: Option<bool>,
    /// `reachable`, `degraded`, `unreachable` (or `unknown` when the
    /// check itself failed).
    pub(super) token: &'static str,
    /// Each token's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tokens: Option<Vec<TokenHealth>>,
    /// `reachable` or `unreachable`, when Redis holds the shared state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) shared_state: Option<&'static str>,
}

/// One token in [`Health::tokens`].
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct TokenHealth {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    index: usize,
    label: String,
    logged_in: bool,
    token: &'static str,
}

/// `/healthz`: 200 while at least one token is reachable and logged in,
/// with each token's state under `Tokens`; `Token` is `reachable` when all
/// are, `degraded` when some are, `unreachable` when none is.
pub(super) fn health_body(tokens: &[(usize, String, crate::Result<bool>)]) -> (u16, Health) {
    let entries: Vec<TokenHealth> = tokens
        .iter()
        .map(|(index, name, state)| match state {
            Ok(logged_in) => TokenHealth {
                error: None,
                index: *index,
                label: name.clone(),
                logged_in: *logged_in,
                token: "reachable",
            },
            Err(e) => TokenHealth {
                error: Some(e.code()),
                index: *index,
                label: name.clone(),
                logged_in: false,
                token: "unreachable",
            },
        })
        .collect();
    let reachable = tokens.iter().filter(|(_, _, s)| s.is_ok()).count();
    let serving = tokens.iter().any(|(_, _, s)| matches!(s, Ok(true)));
    let token = match reachable {
        0 => "unreachable",
        n if n == tokens.len() => "reachable",
        _ => "degraded",
    };
    let first_error = tokens.iter().find_map(|(_, _, s)| s.as_ref().err());
    let body = Health {
        error: first_error.filter(|_| !serving).map(crate::Error::code),
        logged_in: Some(serving),
        token,
        tokens: Some(entries),
        shared_state: None,
    };
    (if serving { 200 } else { 503 }, body)
}

/// A token name as the metrics, `/healthz` and the log show it: control
/// characters replaced, at most 64 characters. Names come from the
/// configuration (checked there too), never from callers.
pub(super) fn shown(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
#[path = "tokens/tests.rs"]
mod tests;
