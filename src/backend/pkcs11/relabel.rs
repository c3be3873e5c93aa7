//! Changing a key pair's identity: one path for every key hsm-csr hands
//! over (a new key leaving its "not yet delivered" mark, a pool key being
//! taken and delivered) and for a new pool key joining the pool.
//!
//! Only the objects whose identity changes are written, one
//! C_SetAttributeValue each, public before private: a key made on demand
//! is born with its final CKA_ID and label on the public object and its
//! mark on the private one, so its delivery is one call. A change cut off
//! half-way leaves the private key under its mark (a sweep finds the
//! public half through [`every_form`](super::id::every_form)); at worst a lone public
//! object, never a lone private one.
//!
//! A token may answer CKR_OK and keep the old CKA_ID: the first change on
//! each connection is read back in full ([`Learned`]), and a token that
//! kept the old value is treated as one that refused. Later changes on
//! that connection are not read back: whether a token keeps a CKA_ID it
//! was given is a property of the token, not of the call, and each read
//! back costs two round trips on a network HSM.
//!
//! It is not a compare-and-swap: between replicas, who may take a pool key
//! is decided first by the [`Coordinator`](super::mark::Coordinator)
//! (an atomic set-if-unset in Redis), and the winner checks the key still
//! carries its pool ID.

use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectHandle};
use cryptoki::session::Session;

use super::describe;
use super::learned::Learned;
use crate::owner::Owner;

/// Why a claim failed, and whether the token said it never will succeed.
pub(in crate::backend::pkcs11) struct ClaimFailed {
    pub(in crate::backend::pkcs11) detail: crate::error::Detail,
    pub(in crate::backend::pkcs11) refused: bool,
}

pub(in crate::backend::pkcs11) type Claim = std::result::Result<(), ClaimFailed>;

/// One object's new CKA_ID and the other attributes that go with it.
#[derive(Clone, Debug)]
pub(in crate::backend::pkcs11) struct Rename {
    pub(in crate::backend::pkcs11) object: ObjectHandle,
    pub(in crate::backend::pkcs11) id: Vec<u8>,
    pub(in crate::backend::pkcs11) also: Vec<Attribute>,
}

impl Rename {
    /// `object` gets CKA_ID `id` and CKA_LABEL `label`.
    pub(in crate::backend::pkcs11) fn new(object: ObjectHandle, id: &[u8], label: &str) -> Self {
        Rename {
            object,
            id: id.to_vec(),
            also: vec![Attribute::Label(label.as_bytes().to_vec())],
        }
    }

    /// With `owner` as CKA_SUBJECT too; `dated` adds today as
    /// CKA_START_DATE (public keys only: see `inventory::list_keys`).
    pub(in crate::backend::pkcs11) fn owned(mut self, owner: Option<&Owner>, dated: bool) -> Self {
        if let Some(owner) = owner {
            self.also.push(Attribute::Subject(owner.to_subject_der()));
            if dated {
                let today = super::dates::date_of(crate::day::Day::today());
                self.also.push(Attribute::StartDate(today));
            }
        }
        self
    }
}

/// Whether `e` says the token will never make this change, as opposed to
/// a failure of this one call.
fn refuses(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::AttributeReadOnly
                | RvError::ActionProhibited
                | RvError::AttributeTypeInvalid
                | RvError::AttributeValueInvalid
                | RvError::TemplateInconsistent
                | RvError::FunctionNotSupported,
            _
        )
    )
}

/// Whether `object` carries CKA_ID `id` now, told by its length alone
/// (one C_GetAttributeValue asking for the length): an object hsm-csr
/// made carries one of its forms, each of its own length (`R` 16 bytes, a
/// pool ID 24, a mark 32; see [`every_form`](super::id::every_form)), and a token that
/// kept the old value reports the old length.
pub(in crate::backend::pkcs11) fn carries(
    session: &Session,
    object: ObjectHandle,
    id: &[u8],
) -> std::result::Result<bool, P11Error> {
    let info = session.get_attribute_info(object, &[AttributeType::Id])?;
    Ok(matches!(info.as_slice(), [AttributeInfo::Available(n)] if *n == id.len()))
}

/// Applies `renames` in order, one C_SetAttributeValue each, and reads the
/// CKA_IDs back if this connection has not yet seen the token keep one.
pub(in crate::backend::pkcs11) fn rename(
    session: &Session,
    learned: &Learned,
    renames: &[Rename],
) -> Claim {
    for r in renames {
        let mut template = vec![Attribute::Id(r.id.clone())];
        template.extend(r.also.iter().cloned());
        session
            .update_attributes(r.object, &template)
            .map_err(|e| ClaimFailed {
                refused: refuses(&e),
                detail: describe(&e).context("setting CKA_ID and CKA_LABEL"),
            })?;
    }
    if !learned.must_read_back() {
        return Ok(());
    }
    for r in renames {
        match carries(session, r.object, &r.id) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ClaimFailed {
                    detail: "the token took a new CKA_ID but kept the old one".into(),
                    refused: true,
                });
            }
            Err(e) => {
                return Err(ClaimFailed {
                    detail: describe(&e).context("reading back a new CKA_ID"),
                    refused: false,
                });
            }
        }
    }
    learned.id_change_kept();
    Ok(())
}
