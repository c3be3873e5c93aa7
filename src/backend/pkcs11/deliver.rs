//! Delivery: a key this session made or took leaves its "not yet
//! delivered" mark for the identity its response names, in as few token
//! calls as the key needs (one for a key made on demand, whose public key
//! was made under its final CKA_ID; two for a pool key), through
//! [`relabel::rename`].

use std::sync::atomic::Ordering;

use super::{Pkcs11Backend, keygen, relabel};
use crate::backend::GeneratedKey;
use crate::error::{Error, Result};

/// A pair this session made or took and has not delivered yet.
#[derive(Debug)]
pub(super) struct Unsettled {
    pub(super) pair: keygen::Pair,
    /// The private key's CKA_ID on the token (a [`mark`]).
    pub(super) on_token: Vec<u8>,
    /// What the public key still needs at delivery (a pool key's keeps
    /// its pool ID until then); None when it was made with its final
    /// identity.
    pub(super) public: Option<relabel::Rename>,
}

impl Unsettled {
    pub(super) fn is(&self, key: &GeneratedKey) -> bool {
        self.pair.is(key)
    }
}

impl Pkcs11Backend {
    /// [`KeyBackend::settle`]: gives `key`, if it is still unsettled, the
    /// identity its response names; public key first, when it needs one.
    pub(super) fn deliver(&mut self, key: &GeneratedKey) -> Result<()> {
        let Some((at, pending)) = self.unsettled.iter().enumerate().find(|(_, u)| u.is(key)) else {
            return Ok(());
        };
        if !self.coordinator.may_deliver() {
            return Err(Error::Token {
                op: "delivering a key",
                token: self.label.clone(),
                detail: "this replica's lease in Redis may have lapsed, so another replica may \
                         be removing its undelivered keys; check that Redis is reachable"
                    .into(),
            });
        }
        // Public first: cut off in between, the private key still carries
        // its mark, and a sweep finds both halves.
        let renames: Vec<relabel::Rename> = pending
            .public
            .iter()
            .cloned()
            .chain([relabel::Rename::new(
                pending.pair.private,
                &key.id,
                &key.label,
            )])
            .collect();
        let settled = self
            .session()
            .map_err(|e| relabel::ClaimFailed {
                detail: e.to_string().into(),
                refused: false,
            })
            .and_then(|session| relabel::rename(session, &self.learned, &renames));
        match settled {
            Ok(()) => {
                self.unsettled.swap_remove(at);
                Ok(())
            }
            Err(failed) => {
                if failed.refused && !self.learned.marks_refused.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "token {:?} refused to change a new key's CKA_ID ({}): keys are made \
                         under their final CKA_ID from now on, so a crash mid-call can leave \
                         an undelivered key that nothing marks",
                        self.label,
                        failed.detail
                    );
                }
                Err(Error::Token {
                    op: "giving a new key its final CKA_ID and label (C_SetAttributeValue)",
                    token: self.label.clone(),
                    detail: failed.detail,
                })
            }
        }
    }
}
