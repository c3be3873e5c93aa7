//! Where the service's key pairs are made: [`Sessions`], implemented by
//! the token's [`SessionPool`] and, in the router's unit tests, by the mock
//! backend. The HTTP layer sees no PKCS#11.

use crate::attach::Attached;
use crate::audit::Trail;
use crate::backend::pkcs11::pool::PoolStats;
use crate::certificate::ParsedCertificate;
use crate::error::Result;
use crate::issue::{CsrResponse, Timings};
use crate::quota::Caller;
use crate::request::ValidRequest;
use crate::retention::OwnerCounts;
use crate::session_pool::SessionPool;

/// Sessions to make key pairs and CSRs on. Every method but the counters
/// may block: the service calls them on blocking threads.
pub(crate) trait Sessions: Send + Sync + 'static {
    /// How many requests can be on the token at once.
    fn total(&self) -> usize;

    /// How many sessions are open in all (request sessions and any other,
    /// such as the key pool's refiller).
    fn sessions_open(&self) -> usize;

    /// Whether the token stopped answering and is being reconnected.
    fn is_broken(&self) -> bool;

    /// The token, as the operator named it.
    fn token_name(&self) -> String;

    /// Whether an idle session is still logged in.
    ///
    /// # Errors
    /// When the token does not answer.
    fn health(&self) -> Result<bool>;

    /// The key pool's counters, when there is a pool.
    fn key_pool(&self) -> Option<PoolStats>;

    /// Objects on the token and its `max_objects` (if set), when counted.
    fn capacity(&self) -> Option<(usize, Option<usize>)> {
        None
    }

    /// Key pairs and certificates per owner (`""`: none), as the last
    /// pass over every key found them.
    fn owners(&self) -> OwnerCounts {
        OwnerCounts::default()
    }

    /// The notAfter of the newest certificate of each key in use (not
    /// replaced by a renewal), as the last pass over every key found them.
    fn expiries(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Makes the CSR for `request` on an idle session, for `caller` (the
    /// key is its, its quota checked first); keeps the key pair
    /// only when `deliver` says the response will be taken and its
    /// delivery is recorded in `audit` (the caller releases it only once
    /// this returns). None when no session is idle (the token is being
    /// reopened).
    ///
    /// # Errors
    /// What making the key or CSR failed with; nothing is left on the token.
    fn issue(
        &self,
        request: &ValidRequest,
        request_id: &str,
        caller: &Caller,
        audit: Option<&Trail<'_>>,
        deliver: &mut dyn FnMut(CsrResponse) -> bool,
    ) -> Result<Option<Timings>>;

    /// Opens the token again after it went away; called while no request
    /// holds a session.
    ///
    /// # Errors
    /// What opening or logging in failed with.
    fn reopen(&self) -> Result<()>;

    /// Stores `cert` beside `caller`'s key on an idle session
    /// ([`crate::attach::attach_certificate`]), once it covers `domain`;
    /// keeps a newly stored certificate only when `deliver` says the
    /// answer was taken. None when no session is idle.
    ///
    /// # Errors
    /// `Certificate.MissMatch`, `Certificate.NoPrivateKey`, or what the
    /// token failed with.
    fn attach(
        &self,
        cert: &ParsedCertificate,
        domain: &str,
        caller: &Caller,
        request_id: &str,
        deliver: &mut dyn FnMut(&Attached) -> bool,
    ) -> Result<Option<Attached>>;
}

impl Sessions for SessionPool {
    fn total(&self) -> usize {
        SessionPool::total(self)
    }

    fn sessions_open(&self) -> usize {
        SessionPool::total(self) + usize::from(self.key_pool().is_some())
    }

    fn is_broken(&self) -> bool {
        SessionPool::is_broken(self)
    }

    fn token_name(&self) -> String {
        SessionPool::token_name(self)
    }

    fn health(&self) -> Result<bool> {
        SessionPool::health(self)
    }

    fn key_pool(&self) -> Option<PoolStats> {
        SessionPool::key_pool(self).map(|p| p.stats())
    }

    fn capacity(&self) -> Option<(usize, Option<usize>)> {
        SessionPool::capacity(self).map(|c| (c.objects(), c.max_objects()))
    }

    fn owners(&self) -> OwnerCounts {
        SessionPool::owners(self)
    }

    fn expiries(&self) -> Vec<u64> {
        SessionPool::expiries(self)
    }

    fn issue(
        &self,
        request: &ValidRequest,
        request_id: &str,
        caller: &Caller,
        audit: Option<&Trail<'_>>,
        deliver: &mut dyn FnMut(CsrResponse) -> bool,
    ) -> Result<Option<Timings>> {
        SessionPool::issue(self, request, request_id, caller, audit, deliver)
    }

    fn reopen(&self) -> Result<()> {
        SessionPool::reopen(self)
    }

    fn attach(
        &self,
        cert: &ParsedCertificate,
        domain: &str,
        caller: &Caller,
        request_id: &str,
        deliver: &mut dyn FnMut(&Attached) -> bool,
    ) -> Result<Option<Attached>> {
        SessionPool::attach(self, cert, domain, caller, request_id, deliver)
    }
}
