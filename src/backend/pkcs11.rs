//! PKCS#11 (Cryptoki v2.40 / v3) implementation of [`KeyBackend`].
//!
//! One context per module per process (`context`), one read-write
//! session per backend, one login. The token is found by label or serial
//! (`TokenSelector`), never by slot number alone.

pub(crate) mod capacity;
mod context;
mod dates;
mod deliver;
pub mod id;
pub(crate) mod inventory;
mod keygen;
mod learned;
mod lookup;
pub(crate) mod mark;
pub(crate) mod orphans;
pub mod pool;
mod process;
mod relabel;
mod sign;
pub(crate) mod softhsm_conf;
pub(crate) mod sweep;
pub(crate) mod token_selection;
pub(crate) mod uri;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;

use crate::algorithm::SignatureAlgorithm;
use crate::backend::{GeneratedKey, KeyBackend, KeySpec};
use crate::error::{Error, Result};
use deliver::Unsettled;

pub(crate) use lookup::MOST_CERTIFICATES;
pub use token_selection::TokenSelector;

/// A logged-in session on one token.
pub struct Pkcs11Backend {
    // Field order matters: the session closes before the context may be
    // finalised (fields drop in declaration order).
    session: Option<Session>,
    ctx: Arc<context::Context>,
    slot: Slot,
    /// None when the module cannot report it (see [`token_selection`]).
    token: Option<TokenInfo>,
    label: String,
    serial: String,
    module: PathBuf,
    /// What this connection learned about the token ([`learned`]), shared
    /// by every session opened from it.
    learned: Arc<learned::Learned>,
    /// Key pairs made through this backend whose fate is open (neither
    /// delivered nor destroyed), so that handles given out as plain numbers
    /// map back to objects. [`KeyBackend::forget`] drops delivered ones: a
    /// long-lived session holds only the pairs of the requests in flight.
    made: Vec<keygen::Pair>,
    /// CKA_IDs of this session's orphans ([`orphans`]).
    orphans: Vec<Vec<u8>>,
    /// Pairs of `made` not delivered yet.
    unsettled: Vec<Unsettled>,
    /// Pool claims and owner liveness, shared by replicas ([`mark`]).
    coordinator: Arc<dyn mark::Coordinator>,
    /// The certificate objects the last [`KeyInventory`] lookup listed and
    /// those it stored since, so that handles given out as plain numbers
    /// map back to objects.
    certificate_objects: Vec<cryptoki::object::ObjectHandle>,
    /// The token's object budget, when `max_objects` is set (shared by
    /// all sessions).
    capacity: Option<Arc<capacity::Capacity>>,
    /// The objects behind this session's last listing, by locator.
    listed: std::sync::Mutex<std::collections::HashMap<Vec<u8>, inventory::Listed>>,
}

impl std::fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.module)
            .field("token", &self.label)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Loads `module` (once per process), finds the token `selector` names
    /// and opens a read-write session on it. Call [`Self::login`] next.
    ///
    /// # Errors
    /// `Token.ModuleNotLoadable` when the module cannot be loaded or
    /// initialised, `Token.NotFound` when no token matches.
    pub fn open(module: &Path, selector: &TokenSelector) -> Result<Self> {
        if !module.exists() {
            return Err(Error::ModuleLoad {
                path: module.display().to_string(),
                reason: "no such file".into(),
            });
        }
        let ctx = context::get(module)?;
        let t = std::time::Instant::now();
        let found = token_selection::find(&ctx.pkcs11, &module.display().to_string(), selector)?;
        log::debug!("found token {} in {:?}", selector.describe(), t.elapsed());
        let (label, serial) = match &found.info {
            Some(info) => (info.label().to_owned(), info.serial_number().to_owned()),
            None => (
                selector.label.clone().unwrap_or_default(),
                selector.serial.clone().unwrap_or_default(),
            ),
        };
        let session = ctx
            .pkcs11
            .open_rw_session(found.slot)
            .map_err(|e| Error::Token {
                op: "opening a read-write session",
                token: label.clone(),
                detail: describe(&e),
            })?;
        Ok(Pkcs11Backend {
            session: Some(session),
            ctx,
            slot: found.slot,
            token: found.info,
            label,
            serial,
            module: module.to_owned(),
            learned: Arc::default(),
            made: Vec::new(),
            orphans: Vec::new(),
            unsettled: Vec::new(),
            coordinator: Arc::new(mark::InProcess),
            certificate_objects: Vec::new(),
            capacity: None,
            listed: std::sync::Mutex::default(),
        })
    }

    /// Holds this token to `max_objects` (`capacity`): counts what it
    /// holds now (one search), and shares the budget with the sessions
    /// opened from this one later.
    ///
    /// # Errors
    /// A token error when the count fails.
    pub(crate) fn limit_objects(&mut self, max_objects: usize) -> Result<Arc<capacity::Capacity>> {
        let objects = self.count_objects(max_objects)?;
        let budget = Arc::new(capacity::Capacity::new(max_objects, objects));
        self.capacity = Some(Arc::clone(&budget));
        Ok(budget)
    }

    /// Counts this token's objects for `/metrics` (one search now, again
    /// at every sweep), with no limit; a token with `max_objects` is
    /// counted already.
    ///
    /// # Errors
    /// A token error when the count fails.
    pub fn count_objects_for_metrics(&mut self) -> Result<()> {
        if self.capacity.is_none() {
            self.limit_objects(capacity::UNLIMITED)?;
        }
        Ok(())
    }

    /// The token's object budget, when it has one.
    pub(crate) fn capacity(&self) -> Option<&Arc<capacity::Capacity>> {
        self.capacity.as_ref()
    }

    /// Holds this session (one opened anew for the same token) to `budget`.
    pub(crate) fn share_capacity(&mut self, budget: Option<Arc<capacity::Capacity>>) {
        self.capacity = budget;
    }

    /// Counts the token's objects again for its budget, if it has one.
    ///
    /// # Errors
    /// A token error when the count fails.
    pub fn recount_objects(&self) -> Result<()> {
        if let Some(budget) = &self.capacity {
            budget.counted(self.count_objects(budget.count_limit())?);
        }
        Ok(())
    }

    /// Takes room for `n` new objects (see [`capacity::Capacity::take`]).
    fn take_room(&self, n: usize, for_pool: bool) -> Result<()> {
        match &self.capacity {
            Some(budget) => budget.take(n, for_pool, &self.label),
            None => Ok(()),
        }
    }

    /// `n` objects are gone (or were never made).
    fn give_room(&self, n: usize) {
        if let Some(budget) = &self.capacity {
            budget.give_back(n);
        }
    }

    /// Shares pool claims and owner liveness through `coordinator` (this
    /// session and those opened from it later).
    pub(crate) fn set_coordinator(&mut self, coordinator: Arc<dyn mark::Coordinator>) {
        self.coordinator = coordinator;
    }

    /// The coordinator this session uses.
    pub(crate) fn coordinator(&self) -> Arc<dyn mark::Coordinator> {
        Arc::clone(&self.coordinator)
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// A warning for an operator who may run other processes on this
    /// token, when its module is a version known to corrupt keys then
    /// ([`softhsm_conf::shared_store_warning`]).
    pub(crate) fn shared_store_warning(&self) -> Option<String> {
        let info = self.ctx.pkcs11.get_library_info().ok()?;
        let version = info.library_version();
        softhsm_conf::shared_store_warning(
            info.manufacturer_id(),
            (version.major(), version.minor()),
        )
    }

    /// The token's serial number (empty when the module cannot report it).
    pub fn token_serial(&self) -> &str {
        &self.serial
    }

    /// How many read-write sessions the token allows one application, when
    /// it says (CK_TOKEN_INFO ulMaxRwSessionCount).
    pub fn max_rw_sessions(&self) -> Option<u64> {
        match self.token.as_ref()?.max_rw_session_count() {
            cryptoki::slot::Limit::Max(n) => Some(n),
            _ => None,
        }
    }

    /// Another read-write session on the same token, through the same
    /// context, knowing the keys this one last listed. Log it in with
    /// [`Self::login`]; on most tokens the login is shared by all of an
    /// application's sessions.
    ///
    /// # Errors
    /// A token error when the session cannot be opened.
    pub fn another_session(&self) -> Result<Pkcs11Backend> {
        let session = self
            .ctx
            .pkcs11
            .open_rw_session(self.slot)
            .map_err(|e| Error::Token {
                op: "opening a read-write session",
                token: self.label.clone(),
                detail: describe(&e),
            })?;
        Ok(Pkcs11Backend {
            session: Some(session),
            ctx: Arc::clone(&self.ctx),
            slot: self.slot,
            token: self.token.clone(),
            label: self.label.clone(),
            serial: self.serial.clone(),
            module: self.module.clone(),
            learned: Arc::clone(&self.learned),
            made: Vec::new(),
            orphans: Vec::new(),
            unsettled: Vec::new(),
            coordinator: Arc::clone(&self.coordinator),
            certificate_objects: Vec::new(),
            capacity: self.capacity.clone(),
            // "If a particular session can use a particular handle to
            // access a particular object, then any session of that
            // application can use the same handle" (PKCS #11 v2.40 section
            // 2.4): what this session listed can be marked or removed from
            // the new one.
            listed: std::sync::Mutex::new(
                self.listed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        })
    }

    /// Whether the token takes its PIN on its own keypad or reader
    /// (CKF_PROTECTED_AUTHENTICATION_PATH): then [`Self::login`] gets `None`.
    pub fn has_protected_authentication_path(&self) -> bool {
        self.token
            .as_ref()
            .is_some_and(TokenInfo::protected_authentication_path)
    }

    /// Whether the token needs a login (CKF_LOGIN_REQUIRED; assumed when
    /// the module cannot say).
    pub fn login_required(&self) -> bool {
        self.token.as_ref().is_none_or(TokenInfo::login_required)
    }

    /// Logs the user in, once. A wrong PIN is reported, never retried.
    ///
    /// # Errors
    /// `Token.PinIncorrect`, `Token.PinLocked`, or a token error.
    pub fn login(&mut self, pin: Option<&AuthPin>) -> Result<()> {
        let token = self.token_label().to_owned();
        if self.token.as_ref().is_some_and(TokenInfo::user_pin_locked) {
            return Err(Error::PinLocked { token });
        }
        match self.session()?.login(UserType::User, pin) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(P11Error::Pkcs11(RvError::PinIncorrect, _)) => Err(Error::PinIncorrect {
                token,
                pin_source: None,
            }),
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => Err(Error::PinLocked { token }),
            Err(P11Error::Pkcs11(RvError::UserPinNotInitialized, _)) => {
                Err(Error::PinNotInitialized { token })
            }
            // Not a PIN verdict (that is CKR_PIN_INCORRECT): the token could
            // not even check it. SoftHSM says this while its files are
            // being rewritten by another process.
            Err(e @ P11Error::Pkcs11(RvError::GeneralError, _)) => Err(Error::LoginUnavailable {
                token,
                detail: describe(&e),
            }),
            Err(e) => Err(Error::Token {
                op: "C_Login",
                token,
                detail: describe(&e),
            }),
        }
    }

    /// Whether the session is still open and logged in (C_GetSessionInfo).
    ///
    /// # Errors
    /// A token error when the token does not answer.
    pub fn logged_in(&self) -> Result<bool> {
        let info = self
            .session()?
            .get_session_info()
            .map_err(|e| Error::Token {
                op: "C_GetSessionInfo",
                token: self.label.clone(),
                detail: describe(&e),
            })?;
        Ok(matches!(
            info.session_state(),
            cryptoki::session::SessionState::RwUser | cryptoki::session::SessionState::RoUser
        ))
    }

    fn session(&self) -> Result<&Session> {
        self.session
            .as_ref()
            .ok_or_else(|| Error::Internal("session already closed".into()))
    }

    /// The objects behind `key`, which must have been made by this backend.
    fn pair(&self, key: &GeneratedKey) -> Result<keygen::Pair> {
        self.made
            .iter()
            .find(|p| p.is(key))
            .copied()
            .ok_or_else(|| Error::Internal("key pair was not made by this session".into()))
    }

    /// How many key pairs this session still tracks: made, and neither
    /// delivered ([`KeyBackend::forget`]) nor destroyed.
    pub fn tracked_pairs(&self) -> usize {
        self.made.len()
    }
}

impl KeyBackend for Pkcs11Backend {
    fn generate(&mut self, spec: &KeySpec) -> Result<GeneratedKey> {
        let (key, pair, on_token) = keygen::generate(self, spec, &[])?;
        self.made.push(pair);
        if on_token != key.id {
            self.unsettled.push(Unsettled {
                pair,
                on_token,
                public: None,
            });
        }
        Ok(key)
    }

    fn settle(&mut self, key: &GeneratedKey) -> Result<()> {
        self.deliver(key)
    }

    fn sign(
        &mut self,
        key: &GeneratedKey,
        alg: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        sign::sign(self, key, alg, data)
    }

    fn destroy(&mut self, key: &GeneratedKey) -> Result<()> {
        let pair = self.pair(key)?;
        let destroyed = self.session().and_then(|session| {
            keygen::destroy_pair(session, pair).map_err(|detail| Error::Token {
                op: "destroying the new key pair",
                token: self.token_label().to_owned(),
                detail: detail.into(),
            })
        });
        if destroyed.is_err() {
            self.orphans.push(key.id.clone());
            if let Some(pending) = self.unsettled.iter().find(|u| u.is(key)) {
                self.orphans.extend(id::every_form(&pending.on_token));
            }
        }
        destroyed?;
        self.give_room(2);
        self.forget(key);
        Ok(())
    }

    fn forget(&mut self, key: &GeneratedKey) {
        self.made.retain(|p| !p.is(key));
        self.unsettled.retain(|u| !u.is(key));
    }

    fn store_certificate(&mut self, key: &GeneratedKey, cert_der: &[u8]) -> Result<()> {
        self.pair(key)?;
        self.create_certificate(&key.id, &key.label, cert_der)
            .map(drop)
    }
}

/// A PKCS#11 error in the spec's own words: `C_Sign: CKR_KEY_TYPE_INCONSISTENT`,
/// with its return value kept (see [`crate::error::Detail`]).
pub(crate) fn describe(e: &P11Error) -> crate::error::Detail {
    crate::error::Detail::pkcs11(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn errors_read_like_the_spec() {
        let e = P11Error::Pkcs11(RvError::MechanismInvalid, Function::GenerateKeyPair);
        assert_eq!(
            describe(&e).to_string(),
            "C_GenerateKeyPair: CKR_MECHANISM_INVALID"
        );
        assert_eq!(describe(&e).return_value(), Some(RvError::MechanismInvalid));
    }
}
