//! What is on the token: key pairs grouped by CKA_ID, with their PubMd5
//! and attached certificates, read in one pass over the token's objects
//! (one C_FindObjects per class, then attributes per object; no per-key
//! searches, which cost seconds on tokens with hundreds of keys). The
//! listing is data ([`KeyEntry`]); the session keeps the objects behind
//! its last listing (`Listed`), for [`Pkcs11Backend::delete_key`].

use std::collections::BTreeMap;

use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType as P11KeyType, ObjectClass, ObjectHandle,
};
use der::{Decode, Encode};
use x509_cert::Certificate;

use super::dates::{date_of, day_of};
use super::{Pkcs11Backend, describe, keygen, uri};
use crate::algorithm::KeyType;
pub(crate) use crate::backend::KeyEntry;
use crate::backend::key_entry::{id_of_locator, locator};
use crate::day::Day;
use crate::error::{Error, Result};

/// The objects behind one listed [`KeyEntry`].
#[derive(Clone, Debug, Default)]
pub(super) struct Listed {
    pub(super) private: Option<ObjectHandle>,
    pub(super) public: Option<ObjectHandle>,
    /// Every object: keys and certificates.
    pub(super) objects: Vec<ObjectHandle>,
    pub(super) certificates: Vec<ObjectHandle>,
}

/// What one object said of itself.
#[derive(Default)]
struct Read {
    id: Vec<u8>,
    label: Option<String>,
    subject: Option<Vec<u8>>,
    start: Option<Day>,
    end: Option<Day>,
    value: Option<Vec<u8>>,
}

#[derive(Default)]
struct Group {
    label: Option<String>,
    key_type: Option<KeyType>,
    spki: Option<Vec<u8>>,
    private_handle: Option<ObjectHandle>,
    public_handle: Option<ObjectHandle>,
    private: bool,
    owner: Option<String>,
    delivered: Option<Day>,
    replaced: Option<Day>,
    objects: Vec<ObjectHandle>,
    certificates: Vec<Vec<u8>>,
    certificate_objects: Vec<ObjectHandle>,
    /// A certificate's label, for a group with no key object.
    certificate_label: Option<String>,
}

/// Puts each marked private key and its public half back together: a key
/// not yet delivered has its mark on the private object only, and its
/// public object already under the CKA_ID it will have (`R`, or a pool
/// key's `hsm-pool` + `R`, see [`super::id::every_form`]). Listed apart,
/// the public half would look like a lone object of a delivered key, for
/// `keys prune --orphans` to remove while its process is still making it.
fn join_halves_in_flight(groups: &mut BTreeMap<Vec<u8>, Group>) {
    let marked: Vec<Vec<u8>> = groups
        .iter()
        .filter(|(_, g)| g.private && g.public_handle.is_none())
        .map(|(locator, _)| locator.clone())
        .filter(|locator| super::id::decode(id_of_locator(locator)).is_some())
        .collect();
    for mark_locator in marked {
        let forms = super::id::every_form(id_of_locator(&mark_locator));
        for form in forms.iter().skip(1) {
            let half = locator(form, "");
            let lone_public = groups.get(&half).is_some_and(|g| {
                !g.private && g.public_handle.is_some() && g.certificate_objects.is_empty()
            });
            if !lone_public {
                continue;
            }
            let Some(public) = groups.remove(&half) else {
                continue;
            };
            let Some(g) = groups.get_mut(&mark_locator) else {
                continue;
            };
            g.public_handle = public.public_handle;
            g.delivered = public.delivered;
            g.replaced = public.replaced;
            g.objects.extend(public.objects);
            if g.spki.is_none() {
                g.key_type = public.key_type;
                g.spki = public.spki;
            }
            break;
        }
    }
}

impl Read {
    /// What the attributes read from one object say.
    fn from_attributes(attrs: Vec<Attribute>) -> Read {
        let mut read = Read::default();
        for a in attrs {
            match a {
                Attribute::Id(i) => read.id = i,
                Attribute::Label(l) => {
                    read.label = Some(String::from_utf8_lossy(&l).into_owned());
                }
                Attribute::Subject(s) => read.subject = Some(s),
                Attribute::StartDate(d) => read.start = day_of(&d),
                Attribute::EndDate(d) => read.end = day_of(&d),
                Attribute::Value(v) => read.value = Some(v),
                _ => {}
            }
        }
        read
    }
}

impl Group {
    /// Adds object `h` of `class`, which said `read`, to this group.
    fn add(
        &mut self,
        session: &cryptoki::session::Session,
        class: ObjectClass,
        h: ObjectHandle,
        read: Read,
    ) {
        self.objects.push(h);
        if class == ObjectClass::CERTIFICATE {
            if let Some(der) = read.value {
                self.certificates.push(der);
                self.certificate_objects.push(h);
            }
            if self.certificate_label.is_none() {
                self.certificate_label = read.label;
            }
            return;
        }
        if class == ObjectClass::PRIVATE_KEY {
            self.private = true;
            self.private_handle = Some(h);
            self.label = read.label.or(self.label.take());
            // The private key's record is the one that counts.
            self.owner = read
                .subject
                .as_deref()
                .and_then(crate::owner::Owner::from_subject_der)
                .map(|o| o.as_str().to_owned());
        } else {
            self.public_handle = Some(h);
            self.delivered = read.start;
            self.replaced = read.end;
            if self.label.is_none() {
                self.label = read.label;
            }
        }
        if self.spki.is_none() {
            // RSA private keys expose their public half; EC private
            // keys do not, so the public object fills it in.
            if let Ok((kt, spki)) = public_key(session, h) {
                self.key_type = Some(kt);
                self.spki = Some(spki);
            }
        }
    }
}

impl Pkcs11Backend {
    /// Every key pair on the token, sorted by label.
    ///
    /// # Errors
    /// A token error when the objects cannot be listed.
    pub fn list_keys(&self) -> Result<Vec<KeyEntry>> {
        let session = self.session()?;
        let token_err = |op: &'static str, e: cryptoki::error::Error| Error::Token {
            op,
            token: self.label.clone(),
            detail: describe(&e),
        };
        let mut groups: BTreeMap<Vec<u8>, Group> = BTreeMap::new();
        let mut unreadable = 0;
        // One search per class, so that each object is read once, with the
        // attributes its class has. The dates live on the public key:
        // SoftHSM cannot read a set CKA_START_DATE back from a private
        // object (CKR_GENERAL_ERROR).
        let classes: [(ObjectClass, &[AttributeType]); 3] = [
            (
                ObjectClass::PRIVATE_KEY,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Subject,
                ],
            ),
            (
                ObjectClass::PUBLIC_KEY,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::StartDate,
                    AttributeType::EndDate,
                ],
            ),
            (
                ObjectClass::CERTIFICATE,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Value,
                ],
            ),
        ];
        for (class, types) in classes {
            let handles = session
                .find_objects(&[Attribute::Class(class)])
                .map_err(|e| token_err("C_FindObjects", e))?;
            for h in handles {
                // An object another process removed meanwhile, or one a
                // process killed mid-write left torn (SoftHSM rewrites object
                // files in place), is passed over rather than hiding every
                // other key.
                let Ok(attrs) = session.get_attributes(h, types) else {
                    unreadable += 1;
                    continue;
                };
                let read = Read::from_attributes(attrs);
                // Objects without CKA_ID cannot be paired; key them by label.
                let key = locator(&read.id, read.label.as_deref().unwrap_or(""));
                groups.entry(key).or_default().add(session, class, h, read);
            }
        }
        join_halves_in_flight(&mut groups);
        let mut listed = std::collections::HashMap::new();
        let mut keys: Vec<KeyEntry> = groups
            .into_iter()
            // A certificate whose key is gone is listed too (keys prune
            // --orphans removes hsm-csr's).
            .filter(|(_, g)| g.label.is_some() || g.spki.is_some() || !g.certificates.is_empty())
            .map(|(group, g)| {
                let id_bytes = id_of_locator(&group).to_vec();
                let label = g.label.or(g.certificate_label).unwrap_or_default();
                let uri = uri::private_key_uri(&self.label, &self.serial, &label, &id_bytes);
                let mut entry =
                    KeyEntry::new(label, id_bytes, uri).with_public_key(g.key_type, g.spki);
                entry.has_private_key = g.private;
                entry.has_public_key = g.public_handle.is_some();
                entry.undelivered_by =
                    super::id::decode(&entry.id_bytes).map(|(o, _)| o.describe());
                entry.owner = g.owner;
                entry.delivered = g.delivered;
                entry.replaced = g.replaced;
                entry.set_certificates(g.certificates);
                listed.insert(
                    entry.locator(),
                    Listed {
                        private: g.private_handle,
                        public: g.public_handle,
                        objects: g.objects,
                        certificates: g.certificate_objects,
                    },
                );
                entry
            })
            .collect();
        *self.listed.lock().unwrap_or_else(|p| p.into_inner()) = listed;
        keys.sort_by(|a, b| a.label.cmp(&b.label).then(a.id.cmp(&b.id)));
        if unreadable > 0 {
            log::warn!(
                "{unreadable} object(s) on token {:?} could not be read (C_GetAttributeValue failed) and are not listed",
                self.label
            );
        }
        Ok(keys)
    }

    /// The objects behind `key`, as this session's last listing (or
    /// lookup) found them.
    pub(super) fn listed(&self, key: &KeyEntry) -> Option<Listed> {
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key.locator())
            .cloned()
    }

    /// Destroys every object of `key`: private key, public key and attached
    /// certificates, as this session's last listing found them.
    ///
    /// # Errors
    /// `Key.NotFound` for a key this session did not list; a token error
    /// naming the objects that could not be destroyed.
    pub fn delete_key(&mut self, key: &KeyEntry) -> Result<()> {
        let objects = self
            .listed(key)
            .ok_or_else(|| Error::KeyNotFound {
                token: self.label.clone(),
                key: key.key_uri.clone(),
            })?
            .objects;
        let session = self.session()?;
        let failures: Vec<String> = objects
            .iter()
            .filter_map(|h| {
                session
                    .destroy_object(*h)
                    .err()
                    .map(|e| describe(&e).to_string())
            })
            .collect();
        self.give_room(objects.len() - failures.len());
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key.locator());
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Token {
                op: "C_DestroyObject",
                token: self.label.clone(),
                detail: failures.join("; ").into(),
            })
        }
    }

    /// Records on `key`'s public key that a renewal replaced it today
    /// (CKA_END_DATE), for `replaced_after_days`; the dates live on the
    /// public key (see `inventory::list_keys`).
    ///
    /// # Errors
    /// A token error when the key has no public object or the token
    /// refuses the change.
    pub fn mark_replaced(&mut self, key: &KeyEntry) -> Result<()> {
        let session = self.session()?;
        let template = [cryptoki::object::Attribute::EndDate(date_of(Day::today()))];
        let object = self
            .listed(key)
            .and_then(|l| l.public)
            .ok_or_else(|| Error::Token {
                op: "recording that a renewal replaced a key (CKA_END_DATE)",
                token: self.label.clone(),
                detail: "the key pair has no public key object".into(),
            })?;
        session
            .update_attributes(object, &template)
            .map_err(|e| Error::Token {
                op: "recording that a renewal replaced a key (CKA_END_DATE)",
                token: self.label.clone(),
                detail: describe(&e),
            })?;
        Ok(())
    }

    /// Creates the CKO_CERTIFICATE object for `cert_der` with CKA_ID `id`
    /// and CKA_LABEL `label`.
    pub(super) fn create_certificate(
        &mut self,
        id: &[u8],
        label: &str,
        cert_der: &[u8],
    ) -> Result<ObjectHandle> {
        let cert =
            Certificate::from_der(cert_der).map_err(|e| Error::CertificateFormat(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let template = [
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Value(cert_der.to_vec()),
            Attribute::Subject(tbs.subject().to_der()?),
            Attribute::Issuer(tbs.issuer().to_der()?),
            Attribute::SerialNumber(tbs.serial_number().to_der()?),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        self.take_room(1, false)?;
        self.session()?
            .create_object(&template)
            .inspect_err(|_| self.give_room(1))
            .map_err(|e| Error::Token {
                op: "storing the certificate (C_CreateObject)",
                token: self.label.clone(),
                detail: format!(
                    "{}; some tokens (e.g. AWS CloudHSM) cannot store certificates",
                    describe(&e)
                )
                .into(),
            })
    }

    /// Destroys a certificate object.
    pub(super) fn destroy_certificate(&mut self, certificate: ObjectHandle) -> Result<()> {
        self.session()?
            .destroy_object(certificate)
            .inspect(|()| self.give_room(1))
            .map_err(|e| Error::Token {
                op: "removing a certificate (C_DestroyObject)",
                token: self.label.clone(),
                detail: describe(&e),
            })
    }
}

/// The key type and SPKI of a key object, from its public attributes.
pub(super) fn public_key(
    session: &cryptoki::session::Session,
    h: ObjectHandle,
) -> Result<(KeyType, Vec<u8>)> {
    let attrs = session
        .get_attributes(h, &[AttributeType::KeyType, AttributeType::EcParams])
        .map_err(|e| Error::EncodeKey(describe(&e)))?;
    let (mut p11_type, mut params) = (None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => p11_type = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    let key_type = match p11_type {
        Some(t) if t == P11KeyType::RSA => KeyType::Rsa { bits: 0 },
        Some(t) if t == P11KeyType::EC => {
            let curve = params
                .as_deref()
                .and_then(|p| const_oid::ObjectIdentifier::from_der(p).ok());
            match curve {
                Some(c) if Some(c) == KeyType::EcP256.curve() => KeyType::EcP256,
                Some(c) if Some(c) == KeyType::EcP384.curve() => KeyType::EcP384,
                _ => return Err(Error::EncodeKey("unsupported curve".into())),
            }
        }
        Some(t) if t == P11KeyType::EC_EDWARDS => KeyType::Ed25519,
        _ => return Err(Error::EncodeKey("unsupported key type".into())),
    };
    let spki = keygen::read_public_key(session, h, key_type, None)?;
    let key_type = match key_type {
        KeyType::Rsa { .. } => KeyType::Rsa {
            bits: crate::spki::rsa_modulus_bits(&spki)?,
        },
        other => other,
    };
    Ok((key_type, spki))
}
