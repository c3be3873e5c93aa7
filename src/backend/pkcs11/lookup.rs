//! Finding one key, and counting, in a bounded number of token calls,
//! whatever else the token holds: the token searches by attribute value
//! (C_FindObjects with a template), hsm-csr never reads every object on a
//! request's path.
//!
//! - A key by its public key: CKA_KEY_TYPE + CKA_MODULUS (RSA, both
//!   objects carry it) or CKA_CLASS + CKA_EC_POINT (EC, Ed25519; DER
//!   OCTET STRING first, raw bytes on tokens that store them so), then
//!   its private key and certificates by CKA_ID (PKCS #11 v2.40 section
//!   4.6: a certificate and its key share CKA_ID).
//! - An owner's keys: CKA_CLASS + CKA_SUBJECT ([`crate::owner`]), read
//!   with one C_FindObjects of at most `limit + 1` handles.
//!
//! Each search is C_FindObjectsInit, one C_FindObjects, C_FindObjectsFinal.

use std::num::NonZeroUsize;

use cryptoki::object::{
    Attribute, AttributeType, KeyType as P11KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use der::Encode;
use der::asn1::OctetStringRef;

use super::inventory::{KeyEntry, Listed, public_key};
use super::{Pkcs11Backend, describe, id, mark, uri};
use crate::backend::{KeyInventory, KeyState, StoredCertificate, StoredKey};
use crate::error::{Error, Result};
use crate::owner::Owner;
use crate::spki::{self, KeyValue};

/// Most objects one public key may match: a pair's two objects, and a few
/// torn copies a crash can leave.
const MOST_MATCHES: usize = 8;
/// Most certificates read for one key. hsm-csr keeps at most
/// `max_certificates_per_key` (at most 64); a key another tool loaded up
/// is read this far.
pub(crate) const MOST_CERTIFICATES: usize = 64;

/// Most handles one C_FindObjects returns.
const SEARCH_BATCH: usize = 1024;

/// At most `most` handles of objects matching `template`: one
/// C_FindObjects for up to [`SEARCH_BATCH`].
pub(super) fn search(
    session: &Session,
    template: &[Attribute],
    most: usize,
) -> cryptoki::error::Result<Vec<ObjectHandle>> {
    // One C_FindObjects for up to SEARCH_BATCH handles, so that a count
    // up to a large limit never allocates the limit.
    let cache = NonZeroUsize::new(most.clamp(1, SEARCH_BATCH)).unwrap_or(NonZeroUsize::MIN);
    session
        .iter_objects_with_cache_size(template, cache)?
        .take(most)
        .collect()
}

impl Pkcs11Backend {
    fn lookup_failed(&self, op: &'static str) -> impl Fn(cryptoki::error::Error) -> Error + '_ {
        move |e| Error::Token {
            op,
            token: self.label.clone(),
            detail: describe(&e),
        }
    }

    /// The delivered key pair whose public key is `spki_der`, with its
    /// owner and certificates; None when the token has no such pair with
    /// a private key (keys not yet delivered and unassigned pool keys
    /// count as none), or, with `owner`, none of that owner's. A bounded
    /// number of token calls.
    ///
    /// # Errors
    /// `Certificate.FormatError` for a public key hsm-csr cannot make; a
    /// token error when a search fails.
    pub fn find_by_public_key(
        &self,
        spki_der: &[u8],
        owner: Option<&Owner>,
    ) -> Result<Option<KeyEntry>> {
        let session = self.session()?;
        // Only what this session finds now stays mapped: a worker session
        // looks up one key per call, for as long as the process runs.
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let failed = self.lookup_failed("looking for the key of a certificate (C_FindObjects)");
        let mut templates = match spki::key_value(spki_der)? {
            KeyValue::RsaModulus(n) => vec![vec![
                Attribute::KeyType(P11KeyType::RSA),
                Attribute::Modulus(n),
            ]],
            KeyValue::Point(p) => {
                let wrapped = OctetStringRef::new(&p)?.to_der()?;
                vec![
                    vec![
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::EcPoint(wrapped),
                    ],
                    vec![
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::EcPoint(p),
                    ],
                ]
            }
        };
        // Another owner's key is not even found: the token answers as for
        // a key that does not exist, with the same calls.
        if let Some(owner) = owner {
            for template in &mut templates {
                template.push(Attribute::Subject(owner.to_subject_der()));
            }
        }
        let mut matched = Vec::new();
        for template in &templates {
            matched = search(session, template, MOST_MATCHES).map_err(&failed)?;
            if !matched.is_empty() {
                break;
            }
        }
        // The CKA_IDs of objects that hold exactly this public key.
        let mut ids: Vec<(Vec<u8>, Option<ObjectHandle>)> = Vec::new();
        let mut key_type = None;
        for h in matched {
            let Ok(attrs) = session.get_attributes(h, &[AttributeType::Class, AttributeType::Id])
            else {
                continue;
            };
            let (mut class, mut id) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Class(c) => class = Some(c),
                    Attribute::Id(i) => id = Some(i),
                    _ => {}
                }
            }
            let (Some(class), Some(id)) = (class, id) else {
                continue;
            };
            if id.is_empty() || id::decode(&id).is_some() || id::is_pool_id(&id) {
                continue;
            }
            match public_key(session, h) {
                Ok((kt, spki)) if spki == spki_der => key_type = Some(kt),
                _ => continue,
            }
            let public = (class == ObjectClass::PUBLIC_KEY).then_some(h);
            match ids.iter_mut().find(|(known, _)| *known == id) {
                Some(entry) => entry.1 = entry.1.or(public),
                None => ids.push((id, public)),
            }
        }
        for (id, public) in ids {
            if let Some(entry) = self.entry_for(session, &id, public, spki_der, key_type)? {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// The key pair with CKA_ID `id`, when it has exactly one private key.
    fn entry_for(
        &self,
        session: &Session,
        id: &[u8],
        public: Option<ObjectHandle>,
        spki_der: &[u8],
        key_type: Option<crate::algorithm::KeyType>,
    ) -> Result<Option<KeyEntry>> {
        let failed = self.lookup_failed("looking for a key by CKA_ID (C_FindObjects)");
        let by_id = |class| [Attribute::Class(class), Attribute::Id(id.to_vec())];
        let private = search(session, &by_id(ObjectClass::PRIVATE_KEY), 2).map_err(&failed)?;
        let [private] = private.as_slice() else {
            return Ok(None);
        };
        let attrs = session
            .get_attributes(*private, &[AttributeType::Label, AttributeType::Subject])
            .map_err(&failed)?;
        let (mut label, mut owner) = (String::new(), None);
        for a in attrs {
            match a {
                Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Subject(s) => owner = Owner::from_subject_der(&s),
                _ => {}
            }
        }
        let cert_handles = search(session, &by_id(ObjectClass::CERTIFICATE), MOST_CERTIFICATES)
            .map_err(&failed)?;
        let mut certificates = Vec::new();
        for h in cert_handles {
            let value = session
                .get_attributes(h, &[AttributeType::Value])
                .map_err(&failed)?;
            if let Some(Attribute::Value(der)) = value.into_iter().next() {
                certificates.push((h, der));
            }
        }
        let uri = uri::private_key_uri(&self.label, &self.serial, &label, id);
        let mut entry = KeyEntry::new(label, id.to_vec(), uri)
            .with_public_key(key_type, Some(spki_der.to_vec()));
        entry.has_private_key = true;
        entry.has_public_key = public.is_some();
        entry.owner = owner.map(|o| o.as_str().to_owned());
        let (cert_objects, ders): (Vec<_>, Vec<_>) = certificates.into_iter().unzip();
        entry.set_certificates(ders);
        let mut objects = vec![*private];
        objects.extend(public);
        objects.extend(cert_objects.iter().copied());
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                entry.locator(),
                Listed {
                    private: Some(*private),
                    public,
                    objects,
                    certificates: cert_objects,
                },
            );
        Ok(Some(entry))
    }

    /// How many key pairs `owner` has on the token, counted up to
    /// `limit + 1` (enough to tell whether it passed `limit`): one search
    /// for private keys carrying its CKA_SUBJECT, undelivered ones
    /// included.
    ///
    /// # Errors
    /// A token error when the search fails.
    pub fn count_owned(&self, owner: &Owner, limit: usize) -> Result<usize> {
        let template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Subject(owner.to_subject_der()),
        ];
        search(self.session()?, &template, limit.saturating_add(1))
            .map(|found| found.len())
            .map_err(self.lookup_failed("counting an owner's keys (C_FindObjects)"))
    }

    /// How many objects the token holds, counted up to `limit + 1`.
    ///
    /// # Errors
    /// A token error when the search fails.
    pub fn count_objects(&self, limit: usize) -> Result<usize> {
        search(self.session()?, &[], limit.saturating_add(1))
            .map(|found| found.len())
            .map_err(self.lookup_failed("counting the token's objects (C_FindObjects)"))
    }
}

impl KeyInventory for Pkcs11Backend {
    fn store_name(&self) -> String {
        self.label.clone()
    }

    fn list_keys(&mut self) -> Result<Vec<KeyEntry>> {
        Pkcs11Backend::list_keys(self)
    }

    fn delete_key(&mut self, key: &KeyEntry) -> Result<()> {
        Pkcs11Backend::delete_key(self, key)
    }

    fn state_of(&self, key: &KeyEntry) -> KeyState {
        let id = key.id_bytes();
        if let Some((owner, _)) = id::decode(id) {
            let liveness = mark::liveness(&owner, self.coordinator.as_ref());
            KeyState::Undelivered {
                owner_stopped: liveness == mark::Liveness::Dead,
            }
        } else if id::is_pool_id(id) {
            KeyState::Pooled
        } else {
            KeyState::Delivered
        }
    }

    fn confirm_orphan(&mut self, key: &KeyEntry) -> Result<bool> {
        let id = key.id_bytes();
        if id.is_empty() {
            return Ok(false);
        }
        let session = self.session()?;
        let failed = self.lookup_failed("looking again at a lone key object (C_FindObjects)");
        let by_id = |class| [Attribute::Class(class), Attribute::Id(id.to_vec())];
        let private = search(session, &by_id(ObjectClass::PRIVATE_KEY), 2).map_err(&failed)?;
        let public = search(session, &by_id(ObjectClass::PUBLIC_KEY), 2).map_err(&failed)?;
        let certificates = search(session, &by_id(ObjectClass::CERTIFICATE), MOST_CERTIFICATES)
            .map_err(&failed)?;
        let same = (!private.is_empty(), !public.is_empty())
            == (key.has_private_key, key.has_public_key)
            && private.len() <= 1
            && public.len() <= 1;
        let objects: Vec<ObjectHandle> = private
            .iter()
            .chain(&public)
            .chain(&certificates)
            .copied()
            .collect();
        if !same || objects.is_empty() {
            return Ok(false);
        }
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.locator(),
                Listed {
                    private: private.first().copied(),
                    public: public.first().copied(),
                    objects,
                    certificates,
                },
            );
        Ok(true)
    }

    fn retire_undelivered(&mut self, key: &KeyEntry) -> Result<()> {
        self.destroy_marked(key.id_bytes())
    }

    fn find_by_public_key(
        &mut self,
        spki_der: &[u8],
        owner: Option<&Owner>,
    ) -> Result<Option<StoredKey>> {
        let Some(entry) = Pkcs11Backend::find_by_public_key(self, spki_der, owner)? else {
            return Ok(None);
        };
        let objects = self
            .listed(&entry)
            .map(|l| l.certificates)
            .unwrap_or_default();
        let certificates = objects
            .iter()
            .zip(entry.certificates())
            .map(|(h, der)| StoredCertificate {
                object: h.handle(),
                der: der.clone(),
            })
            .collect();
        self.certificate_objects = objects;
        Ok(Some(StoredKey {
            owner: entry.owner.as_deref().and_then(|o| Owner::new(o).ok()),
            pub_md5: entry.pub_md5.clone().unwrap_or_default(),
            uri: entry.key_uri,
            label: entry.label,
            id: entry.id_bytes,
            certificates,
        }))
    }

    fn count_owned(&mut self, owner: &Owner, limit: usize) -> Result<usize> {
        Pkcs11Backend::count_owned(self, owner, limit)
    }

    fn store_certificate_for(&mut self, key: &StoredKey, cert_der: &[u8]) -> Result<u64> {
        let object = self.create_certificate(&key.id, &key.label, cert_der)?;
        self.certificate_objects.push(object);
        Ok(object.handle())
    }

    fn remove_certificate(&mut self, object: u64) -> Result<()> {
        let at = self
            .certificate_objects
            .iter()
            .position(|h| h.handle() == object)
            .ok_or_else(|| {
                Error::Internal("certificate object was not listed by this session".into())
            })?;
        let handle = self.certificate_objects.swap_remove(at);
        self.destroy_certificate(handle)
    }
}
