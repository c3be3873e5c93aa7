//! Orphans: key pairs that may be on the token although no CSR was
//! delivered for them, because C_GenerateKeyPair or C_DestroyObject failed,
//! or the token went away mid-call and nobody knows what it did. They are
//! known by CKA_ID: 16 random bytes from the host's RNG, chosen for that
//! one pair (after a fixed prefix for pool keys), so destroying by CKA_ID
//! touches nothing else.
//!
//! Each session remembers the orphans of its own failed calls
//! ([`Pkcs11Backend::destroy_orphans`] tries them); what no session can
//! reach yet waits in an [`Orphans`] list shared by all of a process's
//! sessions, and what is left at exit is named for the operator
//! ([`report`]).

use std::sync::Mutex;

use cryptoki::object::{Attribute, ObjectClass};

use super::{Pkcs11Backend, describe};
use crate::error::{Error, Result};
use crate::fingerprint;

/// Names, for the operator, the CKA_IDs of orphans no session could check.
/// `context` (e.g. `"line 3: "`) starts each line.
pub(crate) fn report(ids: &[Vec<u8>], context: &str) {
    for id in ids {
        log::warn!(
            "{context}a key pair with CKA_ID {} may be on the token although no CSR was delivered for it; check `hsm-csr keys list`",
            fingerprint::hex(id)
        );
    }
}

/// The CKA_IDs of orphans that no session could check yet, shared by the
/// sessions of one process.
#[derive(Debug, Default)]
pub(crate) struct Orphans(Mutex<Vec<Vec<u8>>>);

impl Orphans {
    /// Takes every CKA_ID out of the list.
    pub(crate) fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds CKA_IDs to the list.
    pub(crate) fn keep(&self, mut ids: Vec<Vec<u8>>) {
        if !ids.is_empty() {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut ids);
        }
    }

    /// Destroys, on `backend`, the orphans of its failed calls together
    /// with those in this list; what it cannot reach goes (back) into the
    /// list, for the next request or the reconnect.
    pub(crate) fn destroy_on(&self, backend: &mut Pkcs11Backend) {
        backend.adopt_orphans(self.take());
        self.keep(backend.destroy_orphans());
    }
}

impl Pkcs11Backend {
    /// Hands over the CKA_IDs of this session's orphans.
    pub(crate) fn take_orphans(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.orphans)
    }

    /// Destroys this session's orphans. Returns the CKA_IDs it could not
    /// check, for later.
    pub fn destroy_orphans(&mut self) -> Vec<Vec<u8>> {
        let ids = self.take_orphans();
        if ids.is_empty() {
            return ids;
        }
        match self.destroy_by_id(&ids) {
            Ok(0) => Vec::new(),
            Ok(n) => {
                log::warn!("removed {n} key pair(s) that a failed call left on the token");
                Vec::new()
            }
            Err(e) => {
                log::warn!(
                    "cannot yet check for key pairs that failed calls may have left on the token: {e}"
                );
                ids
            }
        }
    }

    /// Makes `ids` this session's orphans too, e.g. those of a session this
    /// one replaces.
    pub(crate) fn adopt_orphans(&mut self, mut ids: Vec<Vec<u8>>) {
        self.orphans.append(&mut ids);
    }

    /// Destroys the key objects with these CKA_IDs, if the token has them.
    /// Returns how many IDs had objects.
    ///
    /// # Errors
    /// A token error when the search or a C_DestroyObject fails; call again
    /// with the same IDs later.
    pub(super) fn destroy_by_id(&mut self, ids: &[Vec<u8>]) -> Result<usize> {
        let session = self.session()?;
        let token = || self.label.clone();
        let mut found = 0;
        for id in ids {
            let mut objects = Vec::new();
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                objects.extend(
                    session
                        .find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())])
                        .map_err(|e| Error::Token {
                            op: "looking for a key pair left by a failed call",
                            token: token(),
                            detail: describe(&e),
                        })?,
                );
            }
            if objects.is_empty() {
                continue;
            }
            found += 1;
            for object in objects {
                session.destroy_object(object).map_err(|e| Error::Token {
                    op: "destroying a key pair left by a failed call",
                    token: token(),
                    detail: describe(&e),
                })?;
                self.give_room(1);
            }
        }
        Ok(found)
    }
}
