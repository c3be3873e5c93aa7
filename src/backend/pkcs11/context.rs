//! One `Pkcs11` context per module per process.
//!
//! A module is loaded and `C_Initialize`d once, however many backends use
//! it; `CKR_CRYPTOKI_ALREADY_INITIALIZED` (someone else in the process got
//! there first) is adopted, and `C_Finalize` is called only by the process
//! that initialised it, when the last user is gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};

use super::{describe, softhsm_conf};
use crate::error::{Error, Result};

/// A loaded, initialised module.
pub(super) struct Context {
    pub(super) pkcs11: Pkcs11,
    owns_init: bool,
}

impl Drop for Context {
    fn drop(&mut self) {
        if self.owns_init {
            let _ = self.pkcs11.clone().finalize();
        }
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Context>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<Context>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The context for `module`, loading and initialising it on first use.
///
/// # Errors
/// `Token.ModuleNotLoadable` when the file is missing, is not a PKCS#11
/// module, or its C_Initialize fails.
pub(super) fn get(module: &Path) -> Result<Arc<Context>> {
    let module_load = |reason: String| Error::ModuleLoad {
        path: module.display().to_string(),
        reason,
    };
    let key = module
        .canonicalize()
        .map_err(|e| module_load(e.to_string()))?;
    let mut contexts = registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(ctx) = contexts.get(&key).and_then(Weak::upgrade) {
        return Ok(ctx);
    }
    let t = std::time::Instant::now();
    let pkcs11 = Pkcs11::new(&key).map_err(|e| module_load(e.to_string()))?;
    log::debug!("loaded {} in {:?}", key.display(), t.elapsed());
    let t = std::time::Instant::now();
    let owns_init = match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => true,
        Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
        Err(e) => {
            let mut reason = format!("C_Initialize: {}", describe(&e));
            let hint = softhsm_conf::hint_from_env(module, softhsm_conf::Failure::Initialize);
            if !hint.is_empty() {
                reason = format!("{reason}; {hint}");
            }
            return Err(module_load(reason));
        }
    };
    log::debug!("C_Initialize took {:?}", t.elapsed());
    let ctx = Arc::new(Context { pkcs11, owns_init });
    contexts.insert(key, Arc::downgrade(&ctx));
    Ok(ctx)
}
