//! [`KeyEntry`]: what a backend lists of one key pair (or lone object) on
//! its store. Data only: the backend keeps its own handles to the objects
//! behind an entry, so listings can be passed around, printed, filtered
//! and handed back to [`super::KeyInventory::delete_key`].

use serde::Serialize;

use crate::algorithm::KeyType;
use crate::day::Day;
use crate::fingerprint;
use crate::owner::Owner;

/// One key pair (or lone key, or lone certificate) on the store.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyEntry {
    /// CKA_LABEL (of the private key, else the public key).
    pub label: String,
    /// CKA_ID, lowercase hex.
    pub id: String,
    /// `rsa-2048`, `ec-p256`, ... or the raw CKK_ value.
    pub key_type: String,
    /// MD5 of the DER SubjectPublicKeyInfo, when the public key is readable.
    pub pub_md5: Option<String>,
    /// RFC 7512 URI of the private key.
    pub key_uri: String,
    /// Whether a private key object exists (a lone public key can be listed).
    pub has_private_key: bool,
    /// Whether a public key object exists.
    pub has_public_key: bool,
    /// Whether a certificate with this CKA_ID is on the store.
    pub certificate: bool,
    /// When the pair is not delivered yet (it carries a "not yet
    /// delivered" mark): the process that is making it, or was when it
    /// stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undelivered_by: Option<String>,
    /// Who the pair belongs to ([`crate::owner`]); None for keys made
    /// before owners were recorded, by other tools, and unassigned pool keys.
    pub owner: Option<String>,
    /// The day it was delivered (CKA_START_DATE), when recorded.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "day_text")]
    pub delivered: Option<Day>,
    /// The day a renewal replaced it (CKA_END_DATE), when one did.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "day_text")]
    pub replaced: Option<Day>,
    #[serde(skip)]
    pub(crate) id_bytes: Vec<u8>,
    #[serde(skip)]
    pub(crate) certificates: Vec<Vec<u8>>,
    #[serde(skip)]
    pub(crate) spki: Option<Vec<u8>>,
    #[serde(skip)]
    pub(crate) parsed_type: Option<KeyType>,
}

impl KeyEntry {
    /// An entry with what every listing knows; the rest is filled in by
    /// the backend that lists it.
    pub(crate) fn new(label: String, id_bytes: Vec<u8>, key_uri: String) -> KeyEntry {
        KeyEntry {
            label,
            id: fingerprint::hex(&id_bytes),
            key_type: "unknown".into(),
            pub_md5: None,
            key_uri,
            has_private_key: false,
            has_public_key: false,
            certificate: false,
            undelivered_by: None,
            owner: None,
            delivered: None,
            replaced: None,
            id_bytes,
            certificates: Vec::new(),
            spki: None,
            parsed_type: None,
        }
    }

    /// Sets the public key (and with it the type and PubMd5).
    pub(crate) fn with_public_key(
        mut self,
        key_type: Option<KeyType>,
        spki: Option<Vec<u8>>,
    ) -> KeyEntry {
        self.key_type = key_type.map_or_else(|| "unknown".into(), KeyType::name);
        self.pub_md5 = spki.as_deref().map(fingerprint::pub_md5);
        self.parsed_type = key_type;
        self.spki = spki;
        self
    }

    /// Sets the certificates stored beside it (DER).
    pub(crate) fn set_certificates(&mut self, certificates: Vec<Vec<u8>>) {
        self.certificate = !certificates.is_empty();
        self.certificates = certificates;
    }

    /// The DER SubjectPublicKeyInfo, when the public key is readable.
    pub fn spki_der(&self) -> Option<&[u8]> {
        self.spki.as_deref()
    }

    /// The certificates stored with this key (DER).
    pub fn certificates(&self) -> &[Vec<u8>] {
        &self.certificates
    }

    /// The key type, when the public key is readable.
    pub fn parsed_key_type(&self) -> Option<KeyType> {
        self.parsed_type
    }

    /// CKA_ID.
    pub fn id_bytes(&self) -> &[u8] {
        &self.id_bytes
    }

    /// What a listing groups the entry's objects under: the CKA_ID, or,
    /// for objects without one, the label.
    pub(crate) fn locator(&self) -> Vec<u8> {
        locator(&self.id_bytes, &self.label)
    }

    /// Whether `owner` owns this pair.
    pub fn is_owned_by(&self, owner: &Owner) -> bool {
        self.owner.as_deref() == Some(owner.as_str())
    }

    /// A listing entry with no objects behind it, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(label: &str, id: &[u8], private: bool, public: bool) -> KeyEntry {
        let mut k = KeyEntry::new(
            label.to_owned(),
            id.to_vec(),
            format!("pkcs11:object={label}"),
        );
        k.has_private_key = private;
        k.has_public_key = public;
        k
    }
}

/// What objects with CKA_ID `id` and label `label` are grouped under: a
/// tag byte, then the CKA_ID, or (tagged apart, so that no CKA_ID can
/// spell it) the label of an object without one.
pub(crate) fn locator(id: &[u8], label: &str) -> Vec<u8> {
    if id.is_empty() {
        [&[1u8][..], label.as_bytes()].concat()
    } else {
        [&[0u8][..], id].concat()
    }
}

/// The CKA_ID a [`locator`] stands for (empty for a label's).
pub(crate) fn id_of_locator(locator: &[u8]) -> &[u8] {
    match locator.split_first() {
        Some((0, id)) => id,
        _ => &[],
    }
}

fn day_text<S: serde::Serializer>(day: &Option<Day>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match day {
        Some(d) => s.serialize_str(&d.to_string()),
        None => s.serialize_none(),
    }
}
