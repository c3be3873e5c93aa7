//! Logged-in sessions on one token, shared by the requests of a long-lived
//! process (`serve`; `batch` opens its sessions here too).
//!
//! The login belongs to the application, not the session (PKCS #11 v2.40
//! section 5.6: "all sessions that an application has with a token share
//! the same login state"): C_Login is called once, and every further
//! session starts logged in. When the token goes away, [`SessionPool::reopen`]
//! finalizes the module, opens the token again and logs in once more,
//! for all sessions; a request that finds its session lost before a key
//! pair was made is retried once on a fresh one
//! (`retry_on_lost_session`). Key pairs that failed calls may have left
//! behind are destroyed as soon as a session can reach them
//! (`backend::pkcs11::orphans`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

mod attach;
mod refiller;
mod sweeper;

use crate::audit::{AuditLog, Trail};
use crate::backend::KeyBackend;
use crate::backend::pkcs11::orphans::{self, Orphans};
use crate::backend::pkcs11::pool::{KeyPool, Pooled};
use crate::backend::pkcs11::{Pkcs11Backend, TokenSelector};
use crate::error::{Error, ErrorClass, Result};
use crate::issue::{CsrResponse, Timings, ValidKeyOptions, hand_over, prepare_csr};
use crate::quota::{Caller, Reserved};
use crate::request::ValidRequest;
use crate::retention::{Inventory, OwnerCounts, RetentionConfig};

/// What it takes to open the token again after it went away: module,
/// selector, and the PIN, kept (as a zeroizing secret) for the new login.
pub struct Reconnect {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// Which token.
    pub selector: TokenSelector,
    /// The user PIN, or None for a token that needs no login or takes it on
    /// its own PIN pad.
    pub pin: Option<cryptoki::types::AuthPin>,
}

/// `first` and `count - 1` more sessions on its token, all sharing its
/// login: extra sessions start logged in, and C_Login is not called again.
///
/// # Errors
/// A token error when a session cannot be opened.
pub(crate) fn open_sessions(first: Pkcs11Backend, count: usize) -> Result<Vec<Pkcs11Backend>> {
    let mut others = Vec::with_capacity(count);
    for _ in 1..count {
        others.push(first.another_session()?);
    }
    Ok(std::iter::once(first).chain(others).collect())
}

/// Runs `attempt` on `backend`; when it fails because the session was lost
/// (see [`Error::session_lost`]) before any key pair was made, replaces
/// `backend` with what `reopen` gives and runs `attempt` once more. A
/// failure of `reopen` is returned as is: the token itself is gone.
///
/// # Errors
/// The error of the last attempt, or of `reopen`.
pub(crate) fn retry_on_lost_session<B, T>(
    backend: &mut B,
    reopen: impl FnOnce(&mut B) -> Result<B>,
    mut attempt: impl FnMut(&mut B) -> Result<T>,
) -> Result<T> {
    match attempt(backend) {
        Err(e) if e.session_lost() && !e.key_left_behind() => {
            log::warn!("the token's session was lost ({e}); retrying once on a new session");
            *backend = reopen(backend)?;
            attempt(backend)
        }
        other => other,
    }
}

/// How often `serve` sweeps for undelivered keys of stopped processes.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The key pool's refiller thread (or the sweeper), and the flag that stops it.
type Refiller = (JoinHandle<()>, Arc<AtomicBool>);

/// Logged-in sessions, each used by one request at a time, with the key
/// pool (if any) and its refiller on a session of its own.
pub struct SessionPool {
    idle: Mutex<Vec<Pkcs11Backend>>,
    total: usize,
    token: Reconnect,
    key_options: ValidKeyOptions,
    key_pool: Option<Arc<KeyPool>>,
    /// Set when a session stops answering; cleared once all sessions have
    /// been opened again.
    broken: AtomicBool,
    refiller: Mutex<Option<Refiller>>,
    /// The periodic sweep for undelivered keys (`backend::pkcs11::sweep`).
    sweeper: Mutex<Option<Refiller>>,
    coordinator: Arc<dyn crate::backend::pkcs11::mark::Coordinator>,
    orphans: Arc<Orphans>,
    /// The token's object budget, kept across reconnects.
    capacity: Option<Arc<crate::backend::pkcs11::capacity::Capacity>>,
    /// The periodic pass over every key (owners, `[retention]`).
    inventory: Option<Arc<Inventory>>,
    /// Requests holding a worker session, for the refiller to yield to.
    callers: Arc<refiller::Callers>,
}

impl SessionPool {
    /// `wanted` sessions on the token `first` is logged in to (fewer when
    /// the token allows fewer read-write sessions), making keys as
    /// `key_options` say, from `key_pool` when there is one.
    ///
    /// # Errors
    /// A token error when a session cannot be opened.
    pub fn open(
        first: Pkcs11Backend,
        wanted: usize,
        token: Reconnect,
        key_options: ValidKeyOptions,
        key_pool: Option<Arc<KeyPool>>,
    ) -> Result<SessionPool> {
        let cap = first
            .max_rw_sessions()
            .map_or(wanted, |m| usize::try_from(m).unwrap_or(usize::MAX).max(1));
        let total = wanted.clamp(1, cap.max(1));
        let coordinator = first.coordinator();
        let capacity = first.capacity().cloned();
        if let Some(budget) = &capacity {
            // Room for a key pair per worker, which the pool leaves free.
            budget.set_reserve(2 * total);
        }
        let label = first.token_label().to_owned();
        let shared_store = first.shared_store_warning();
        let sessions = open_sessions(first, total)?;
        log::info!("{total} worker session(s) on token {label:?}");
        if let Some(warning) = shared_store {
            log::warn!("token {label:?}: {warning}");
        }
        Ok(SessionPool {
            idle: Mutex::new(sessions),
            total,
            token,
            key_options,
            key_pool,
            broken: AtomicBool::new(false),
            refiller: Mutex::new(None),
            sweeper: Mutex::new(None),
            coordinator,
            orphans: Arc::default(),
            capacity,
            inventory: None,
            callers: Arc::new(refiller::Callers::new(total)),
        })
    }

    /// The token's object budget, when `max_objects` is set.
    #[cfg_attr(
        not(feature = "service"),
        allow(dead_code, reason = "only serve's /metrics and /healthz read it")
    )]
    pub(crate) fn capacity(&self) -> Option<&crate::backend::pkcs11::capacity::Capacity> {
        self.capacity.as_deref()
    }

    /// Makes the periodic pass over every key (per-owner counts and
    /// `[retention]`); call before [`Self::start_key_pool`].
    pub fn keep_inventory(&mut self, retention: &RetentionConfig, audit: Option<AuditLog>) {
        self.inventory = Some(Arc::new(Inventory {
            every: Duration::from_secs(retention.every_s),
            policy: retention.policy(),
            prefix: self.key_options.label_prefix().to_owned(),
            audit,
            owners: std::sync::Mutex::default(),
            expiries: std::sync::Mutex::default(),
        }));
    }

    /// Key pairs and certificates per owner, as the last pass found them.
    pub fn owners(&self) -> OwnerCounts {
        self.inventory
            .as_ref()
            .map(|i| i.owners.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The notAfter of each key in use's newest certificate, as the last
    /// pass found them.
    pub fn expiries(&self) -> Vec<u64> {
        self.inventory
            .as_ref()
            .map(|i| i.expiries.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// How many requests can be on the token at once.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The key pool, if any.
    pub fn key_pool(&self) -> Option<&KeyPool> {
        self.key_pool.as_deref()
    }

    /// Whether the token stopped answering and [`Self::reopen`] is due.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// The token, as the operator named it.
    pub fn token_name(&self) -> String {
        self.token.selector.describe()
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pkcs11Backend>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an idle session is still logged in; `Ok(true)` when every
    /// session is busy making a key (the token answers).
    ///
    /// # Errors
    /// A token error when the session does not answer, or the token is
    /// being reconnected.
    pub fn health(&self) -> Result<bool> {
        if self.is_broken() {
            return Err(Error::Token {
                op: "reaching the token",
                token: self.token_name(),
                detail: "sessions lost; reconnecting".into(),
            });
        }
        match self.idle().first() {
            None => Ok(true),
            Some(b) => b.logged_in(),
        }
    }

    /// Runs `work` on an idle session, retried once on a fresh session
    /// when the token lost this one ([`retry_on_lost_session`]); None when
    /// no session is idle (the token is being reopened). A session that
    /// stops answering marks the pool for reconnecting. The one hand-off
    /// of [`Self::issue`] and [`Self::attach`].
    ///
    /// # Errors
    /// What `work` failed with.
    pub(crate) fn on_session<T>(
        &self,
        mut work: impl FnMut(&mut Pkcs11Backend) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some(mut backend) = self.idle().pop() else {
            return Ok(None);
        };
        let _busy = self.callers.enter();
        let done = retry_on_lost_session(&mut backend, |old| self.fresh_session(old), &mut work);
        let check_session = done
            .as_ref()
            .is_err_and(|e| e.class() != ErrorClass::Request);
        self.orphans.destroy_on(&mut backend);
        if check_session && !matches!(backend.logged_in(), Ok(true)) {
            log::warn!("the session no longer answers; reconnecting to the token");
            self.broken.store(true, Ordering::Relaxed);
        }
        self.idle().push(backend);
        done.map(Some)
    }

    /// Makes the CSR for `request` on an idle session, for `caller`: the
    /// key is `caller`'s, and its quota is checked on the token first
    /// ([`crate::quota`]). `deliver` offers the response to the caller and
    /// says whether it will be taken: the key pair is kept only then, once
    /// its delivery is recorded in `audit`, and removed otherwise. The
    /// caller releases the response only once this returns it Ok. Returns
    /// the phase durations, or None when no session is idle (the token is
    /// being reopened). The caller makes sure no more than [`Self::total`]
    /// requests run at once.
    ///
    /// # Errors
    /// `QuotaExceeded.Key` before any key is made; what making the key or
    /// CSR failed with; nothing is left on the token.
    pub fn issue(
        &self,
        request: &ValidRequest,
        request_id: &str,
        caller: &Caller,
        audit: Option<&Trail<'_>>,
        deliver: &mut dyn FnMut(CsrResponse) -> bool,
    ) -> Result<Option<Timings>> {
        // A replica whose Redis lease may have lapsed could not deliver the
        // key it would make: refused before keygen, not after.
        if !self.coordinator.may_deliver() {
            return Err(Error::LeaseNotHeld);
        }
        let options = self.key_options.owned_by(caller.principal.owner.clone());
        let store = self.token_name();
        self.on_session(|backend| {
            let reservation = caller.reserve(backend, &store)?;
            let mut pooled;
            let source: &mut dyn KeyBackend = match self.key_pool.as_deref() {
                Some(pool) => {
                    pooled = Pooled { backend, pool };
                    &mut pooled
                }
                None => backend,
            };
            let mut source = Reserved {
                backend: source,
                reservation,
            };
            let id = request_id.to_owned();
            let pending = prepare_csr(&mut source, request, &options, id, audit.cloned())?;
            hand_over(pending, deliver)
        })
    }

    /// A new session in place of one the token lost. It must find the
    /// login still in place: logging in again is left to [`Self::reopen`],
    /// which tries the PIN once for all sessions, never once per request.
    fn fresh_session(&self, old: &mut Pkcs11Backend) -> Result<Pkcs11Backend> {
        let mut fresh = old.another_session()?;
        if fresh.login_required() && !fresh.logged_in()? {
            return Err(Error::Token {
                op: "opening a new session",
                token: fresh.token_label().to_owned(),
                detail: "the token no longer has our login; reconnecting".into(),
            });
        }
        fresh.adopt_orphans(old.take_orphans());
        Ok(fresh)
    }

    /// Adopts the unassigned pool keys on the token and starts the
    /// refiller on a session of its own. Does nothing without a pool.
    ///
    /// # Errors
    /// A token error when the keys cannot be listed or the session opened.
    ///
    /// First removes the undelivered keys of processes that stopped
    /// mid-call, and starts the periodic sweep for them (`backend::pkcs11::sweep`).
    pub fn start_key_pool(&self) -> Result<()> {
        self.start_sweeper()?;
        let Some(pool) = &self.key_pool else {
            return Ok(());
        };
        let session = {
            let idle = self.idle();
            let first = idle
                .first()
                .ok_or_else(|| Error::Internal("no session to refill the pool from".into()))?;
            let adopted = pool.adopt_existing(first)?;
            log::info!(
                "key pool: {adopted} unassigned key(s) adopted from the token, target {}",
                pool.target
            );
            first.another_session()?
        };
        let stop = Arc::new(AtomicBool::new(false));
        let handle = refiller::spawn(
            Arc::clone(pool),
            session,
            self.key_options.clone(),
            (Arc::clone(&stop), Arc::clone(&self.callers)),
            Arc::clone(&self.orphans),
        );
        *self.refiller.lock().unwrap_or_else(|p| p.into_inner()) = Some((handle, stop));
        Ok(())
    }

    fn start_sweeper(&self) -> Result<()> {
        let session = {
            let mut idle = self.idle();
            let first = idle
                .first_mut()
                .ok_or_else(|| Error::Internal("no session to sweep from".into()))?;
            // Not fatal: the periodic sweep tries again.
            // At start, every key on the token: marks of any label prefix.
            if let Err(e) = first.sweep_undelivered(true, None) {
                log::warn!("sweep for undelivered key pairs failed: {e}");
            }
            // The first pass, which removes what a crash left half made,
            // ends before the pool is adopted and refilled: openCryptoki's
            // soft token crashed (SIGSEGV, SIGABRT) when one session
            // removed objects while others read and made keys.
            if let Some(pass) = self.inventory.as_deref() {
                if let Err(e) = crate::retention::inventory_pass(first, pass, true) {
                    log::warn!("pass over the token's keys (owners, retention) failed: {e}");
                }
            }
            first.another_session()?
        };
        let stop = Arc::new(AtomicBool::new(false));
        let label = format!("{}undelivered", self.key_options.label_prefix());
        let inventory = self.inventory.clone();
        let handle =
            sweeper::spawn_sweeper(session, SWEEP_EVERY, label, Arc::clone(&stop), inventory);
        *self.sweeper.lock().unwrap_or_else(|p| p.into_inner()) = Some((handle, stop));
        Ok(())
    }

    /// Stops the refiller and the sweeper, if any, and waits for them.
    pub fn stop_key_pool(&self) {
        for thread in [&self.refiller, &self.sweeper] {
            if let Some((handle, stop)) = thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                stop.store(true, Ordering::Relaxed);
                let _ = handle.join();
            }
        }
    }

    /// Drops every session (so the module is finalized), opens the token
    /// again, logs in and refills the session list, then clears
    /// [`Self::is_broken`]. The caller makes sure no request is using a
    /// session.
    ///
    /// # Errors
    /// What opening the token or logging in failed with; a PIN verdict
    /// (`Token.PinIncorrect`, ...) must not be retried.
    pub fn reopen(&self) -> Result<()> {
        self.stop_key_pool();
        if let Some(pool) = &self.key_pool {
            pool.clear();
        }
        let mut idle = self.idle();
        for mut old in idle.drain(..) {
            self.orphans.keep(old.take_orphans());
        }
        let mut first = Pkcs11Backend::open(&self.token.module, &self.token.selector)?;
        first.set_coordinator(Arc::clone(&self.coordinator));
        if first.login_required() {
            first.login(self.token.pin.as_ref())?;
        }
        first.share_capacity(self.capacity.clone());
        if let Err(e) = first.recount_objects() {
            log::warn!("counting the token's objects failed: {e}");
        }
        // Not fatal: what this cannot reach is tried again later.
        self.orphans.destroy_on(&mut first);
        *idle = open_sessions(first, self.total)?;
        drop(idle);
        self.start_key_pool()?;
        self.broken.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// At exit: stops the refiller, makes one last try to remove the
    /// orphans, and names the CKA_IDs that remain, for the operator.
    pub fn close(&self) {
        self.stop_key_pool();
        if let Some(backend) = self.idle().first_mut() {
            self.orphans.destroy_on(backend);
        }
        orphans::report(&self.orphans.take(), "");
    }
}

#[cfg(test)]
mod tests;
