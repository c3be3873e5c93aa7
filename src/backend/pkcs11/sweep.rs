//! Removing the key pairs that processes which died mid-call left behind.
//!
//! Every pair hsm-csr makes carries a [`mark`] until its response is
//! delivered. A sweep lists the marked pairs on the token and asks, for
//! each owner, whether it still runs ([`mark::liveness`]): the pairs of a
//! dead owner are destroyed under every CKA_ID they may carry
//! (`id::every_form`); those of a live owner (a `create` running beside
//! `serve`, another replica) are left alone; those whose owner cannot be
//! judged from here (another host, no lease) are named for the operator
//! and left alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};

use super::id::{self, Owner};
use super::mark::{self, Liveness};
use super::{Pkcs11Backend, describe};
use crate::error::{Error, Result};

/// What one sweep found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Undelivered pairs of dead owners, destroyed.
    pub removed: usize,
    /// Undelivered pairs of running owners, left alone.
    pub in_flight: usize,
    /// Undelivered pairs whose owner cannot be judged here, left alone.
    pub unknown: usize,
}

impl Pkcs11Backend {
    /// Every marked CKA_ID on the token, by owner; with `label`, only those
    /// of objects labelled so (one search the token answers from its index,
    /// instead of reading the CKA_ID of every key on it).
    fn marks(&self, label: Option<&str>) -> Result<BTreeMap<Vec<u8>, Owner>> {
        let session = self.session()?;
        let token_err = |e: cryptoki::error::Error| Error::Token {
            op: "listing undelivered key pairs",
            token: self.label.clone(),
            detail: describe(&e),
        };
        let mut marks = BTreeMap::new();
        // By label, one search finds both classes (a marked private key;
        // the public half of a pair from an earlier hsm-csr, marked too).
        // Without, one per key class: an empty template also lists what
        // some tokens keep as objects (Kryoptic: its mechanisms).
        let templates: Vec<Vec<Attribute>> = match label {
            Some(l) => vec![vec![Attribute::Label(l.as_bytes().to_vec())]],
            None => [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY]
                .into_iter()
                .map(|class| vec![Attribute::Class(class)])
                .collect(),
        };
        for template in templates {
            for object in session.find_objects(&template).map_err(token_err)? {
                // An object gone meanwhile (another process) is no error.
                let Ok(attrs) = session.get_attributes(object, &[AttributeType::Id]) else {
                    continue;
                };
                if let [Attribute::Id(id)] = attrs.as_slice() {
                    if let Some((owner, _)) = id::decode(id) {
                        marks.insert(id.clone(), owner);
                    }
                }
            }
        }
        Ok(marks)
    }

    /// Destroys the objects marked `id`, and the lone halves under its
    /// other forms ([`id::every_form`]) that a claim cut off half-way
    /// left; a whole pair under another form is a key in its own right
    /// (whoever planted a mark over its CKA_ID must not get it destroyed).
    pub(super) fn destroy_marked(&mut self, id: &[u8]) -> Result<()> {
        let forms = id::every_form(id);
        let Some((mark, others)) = forms.split_first() else {
            return Ok(());
        };
        self.destroy_by_id(std::slice::from_ref(mark))?;
        for form in others {
            if self.key_objects(form)? == 1 {
                self.destroy_by_id(std::slice::from_ref(form))?;
            }
        }
        Ok(())
    }

    /// How many key objects carry CKA_ID `id`.
    fn key_objects(&self, id: &[u8]) -> Result<usize> {
        let session = self.session()?;
        let mut n = 0;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            n += session
                .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
                .map_err(|e| Error::Token {
                    op: "looking for the halves of an undelivered key pair",
                    token: self.label.clone(),
                    detail: describe(&e),
                })?
                .len();
        }
        Ok(n)
    }

    /// Destroys the undelivered pairs of owners that no longer run; with
    /// `report`, names the owners that cannot be judged from here. With
    /// `label` (the undelivered label of this process's label prefix: every
    /// mark is written together with it), only pairs so labelled are looked
    /// at, which keeps a periodic sweep cheap on a token holding thousands
    /// of keys behind a network; without, every key on the token is.
    ///
    /// # Errors
    /// A token error when the objects cannot be listed or destroyed.
    pub(crate) fn sweep_undelivered(&mut self, report: bool, label: Option<&str>) -> Result<Swept> {
        let mut swept = Swept::default();
        let mut judged: BTreeMap<Owner, Liveness> = BTreeMap::new();
        for (id, owner) in self.marks(label)? {
            let coordinator = Arc::clone(&self.coordinator);
            let verdict = *judged
                .entry(owner)
                .or_insert_with(|| mark::liveness(&owner, coordinator.as_ref()));
            match verdict {
                Liveness::Alive => swept.in_flight += 1,
                Liveness::Unknown => swept.unknown += 1,
                Liveness::Dead => {
                    self.destroy_marked(&id)?;
                    swept.removed += 1;
                }
            }
        }
        if swept.removed > 0 {
            log::warn!(
                "removed {} key pair(s) that processes which stopped mid-call left undelivered on token {:?}",
                swept.removed,
                self.label
            );
        }
        for (owner, verdict) in &judged {
            if report && *verdict == Liveness::Unknown {
                log::warn!(
                    "token {:?} holds key pairs not yet delivered by {}, which cannot be judged from \
                     here (another host, no Redis lease): left alone; if that process is gone, \
                     remove them with `hsm-csr keys delete`",
                    self.label,
                    owner.describe()
                );
            }
        }
        Ok(swept)
    }
}
