//! PKCS#11 (Cryptoki v2.40 / v3) implementation of [`KeyBackend`].
//!
//! One process, one context, one read-write session, one login. The token is
//! found by label, never by slot number alone (SoftHSM renumbers slots on
//! every initialisation).

mod keygen;
mod sign;
pub mod uri;

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;

use crate::algorithm::SignatureAlgorithm;
use crate::backend::{GeneratedKey, KeyBackend, KeySpec};
use crate::error::{Error, Result};

/// A logged-in session on one token.
pub struct Pkcs11Backend {
    // Field order matters: the session must close before the context is
    // finalised in `Drop`.
    session: Option<Session>,
    ctx: Pkcs11,
    /// Whether our C_Initialize did the initialising (so C_Finalize is ours).
    owns_init: bool,
    slot: Slot,
    token: TokenInfo,
    module: PathBuf,
    mechanisms: Option<Vec<MechanismType>>,
    /// Key pairs made through this backend and not destroyed, so that
    /// handles given out as plain numbers map back to objects.
    made: Vec<keygen::Pair>,
}

impl std::fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.module)
            .field("token", &self.token.label())
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Loads `module`, initialises it and opens a read-write session on the
    /// token labelled `token_label`. Call [`Self::login`] next.
    ///
    /// # Errors
    /// `Token.ModuleNotLoadable` when the module cannot be loaded or
    /// initialised, `Token.NotFound` when no token has that label.
    pub fn open(module: &Path, token_label: &str) -> Result<Self> {
        let module_load = |reason: String| Error::ModuleLoad {
            path: module.display().to_string(),
            reason,
        };
        if !module.exists() {
            return Err(module_load("no such file".into()));
        }
        let t = std::time::Instant::now();
        let ctx = Pkcs11::new(module).map_err(|e| module_load(e.to_string()))?;
        log::debug!("loaded {} in {:?}", module.display(), t.elapsed());
        let t = std::time::Instant::now();
        let owns_init = match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) => true,
            Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
            Err(e) => return Err(module_load(format!("C_Initialize: {}", describe(&e)))),
        };
        log::debug!("C_Initialize took {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let (slot, token) = find_token(&ctx, module, token_label)?;
        log::debug!("found token {token_label:?} in {:?}", t.elapsed());
        let session = ctx.open_rw_session(slot).map_err(|e| Error::Token {
            op: "opening a read-write session",
            token: token_label.to_owned(),
            detail: describe(&e),
        })?;
        Ok(Pkcs11Backend {
            session: Some(session),
            ctx,
            owns_init,
            slot,
            token,
            module: module.to_owned(),
            mechanisms: None,
            made: Vec::new(),
        })
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        self.token.label()
    }

    /// The token's serial number.
    pub fn token_serial(&self) -> &str {
        self.token.serial_number()
    }

    /// Whether the token takes its PIN on its own keypad or reader
    /// (CKF_PROTECTED_AUTHENTICATION_PATH): then [`Self::login`] gets `None`.
    pub fn has_protected_authentication_path(&self) -> bool {
        self.token.protected_authentication_path()
    }

    /// Whether the token needs a login at all (CKF_LOGIN_REQUIRED).
    pub fn login_required(&self) -> bool {
        self.token.login_required()
    }

    /// Logs the user in, once. A wrong PIN is reported, never retried.
    ///
    /// # Errors
    /// `Token.PinIncorrect`, `Token.PinLocked`, or a token error.
    pub fn login(&mut self, pin: Option<&AuthPin>) -> Result<()> {
        let token = self.token_label().to_owned();
        if self.token.user_pin_locked() {
            return Err(Error::PinLocked { token });
        }
        match self.session()?.login(UserType::User, pin) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(P11Error::Pkcs11(RvError::PinIncorrect, _)) => Err(Error::PinIncorrect { token }),
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => Err(Error::PinLocked { token }),
            Err(e) => Err(Error::Token {
                op: "C_Login",
                token,
                detail: describe(&e),
            }),
        }
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
            .find(|p| {
                p.private.handle() == key.handles.private && p.public.handle() == key.handles.public
            })
            .copied()
            .ok_or_else(|| Error::Internal("key pair was not made by this session".into()))
    }

    /// The token's mechanism list, read once.
    fn mechanisms(&mut self) -> Result<&[MechanismType]> {
        if self.mechanisms.is_none() {
            let list = self
                .ctx
                .get_mechanism_list(self.slot)
                .map_err(|e| Error::Token {
                    op: "C_GetMechanismList",
                    token: self.token_label().to_owned(),
                    detail: describe(&e),
                })?;
            self.mechanisms = Some(list);
        }
        Ok(self.mechanisms.as_deref().unwrap_or_default())
    }

    /// Fails with `Token.MechanismUnsupported` unless the token lists `mech`.
    fn require(&mut self, mech: MechanismType, name: &str) -> Result<()> {
        if self.mechanisms()?.contains(&mech) {
            Ok(())
        } else {
            Err(Error::Unsupported {
                token: self.token_label().to_owned(),
                what: name.to_owned(),
            })
        }
    }
}

impl KeyBackend for Pkcs11Backend {
    fn generate(&mut self, spec: &KeySpec) -> Result<GeneratedKey> {
        keygen::generate(self, spec)
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
        keygen::destroy_pair(self.session()?, pair).map_err(|detail| Error::Token {
            op: "destroying the new key pair",
            token: self.token_label().to_owned(),
            detail,
        })?;
        self.made.retain(|p| p.private != pair.private);
        Ok(())
    }
}

impl Drop for Pkcs11Backend {
    fn drop(&mut self) {
        // Closing the session logs out; then finalise only what we initialised.
        drop(self.session.take());
        if self.owns_init {
            let _ = self.ctx.clone().finalize();
        }
    }
}

/// Finds the slot whose token has `label`. A slot whose C_GetTokenInfo fails
/// is skipped with a warning: one broken slot must not hide the others.
fn find_token(ctx: &Pkcs11, module: &Path, label: &str) -> Result<(Slot, TokenInfo)> {
    let slots = ctx.get_slots_with_token().map_err(|e| Error::ModuleLoad {
        path: module.display().to_string(),
        reason: format!("C_GetSlotList: {}", describe(&e)),
    })?;
    let mut available = Vec::new();
    for slot in slots {
        match ctx.get_token_info(slot) {
            Ok(info) if info.token_initialized() && info.label() == label => {
                return Ok((slot, info));
            }
            Ok(info) if info.token_initialized() => available.push(info.label().to_owned()),
            Ok(_) => {}
            Err(e) => log::warn!(
                "skipping slot {}: C_GetTokenInfo failed: {}",
                slot.id(),
                describe(&e)
            ),
        }
    }
    Err(Error::TokenNotFound {
        label: label.to_owned(),
        module: module.display().to_string(),
        available,
    })
}

/// A PKCS#11 error in the spec's own words: `C_Sign: CKR_KEY_TYPE_INCONSISTENT`.
pub(crate) fn describe(e: &P11Error) -> String {
    match e {
        P11Error::Pkcs11(rv, function) => {
            format!("C_{function:?}: {}", screaming("CKR", &format!("{rv:?}")))
        }
        other => other.to_string(),
    }
}

/// `PinIncorrect` -> `CKR_PIN_INCORRECT`.
fn screaming(prefix: &str, camel: &str) -> String {
    let mut out = String::from(prefix);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn errors_read_like_the_spec() {
        let e = P11Error::Pkcs11(RvError::MechanismInvalid, Function::GenerateKeyPair);
        assert_eq!(describe(&e), "C_GenerateKeyPair: CKR_MECHANISM_INVALID");
    }
}
