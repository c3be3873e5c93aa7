//! Attaching a CA's certificate to the key pair it was issued for: what
//! `hsm-csr attach-cert` and the service's SetCdnDomainCSRCertificate /
//! SetDcdnDomainCSRCertificate both do, through [`attach_certificate`].
//!
//! The certificate must be worth storing
//! (`ParsedCertificate::check_storable`). Its key is found by the token
//! from its whole public key ([`KeyInventory::find_by_public_key`], a
//! bounded number of token calls), among delivered keys whose private
//! half is on the token, and only among the caller's own
//! ([`Principal::may_use`]): another owner's key is answered exactly as a
//! missing one, so nobody can probe for other tenants' keys. The
//! certificate is stored beside it as a CKO_CERTIFICATE with the key's
//! CKA_ID and CKA_LABEL (PKCS #11 v2.40 section 4.6).
//!
//! A key keeps its [`AttachPolicy::max_per_key`] newest certificates (by
//! notBefore): a newer one displaces the oldest, once its answer is
//! taken. The same certificate twice is stored once; within a process,
//! attaches to one key run one at a time, so that two calls with the same
//! certificate cannot both find it missing and store it twice.

use std::sync::{Condvar, Mutex};

use serde::Serialize;

use crate::backend::{KeyInventory, StoredKey};
/// A certificate read once (PEM or DER), as [`attach_certificate`] takes it.
pub use crate::certificate::ParsedCertificate;
use crate::error::{Error, Result};
use crate::owner::Principal;

/// What an attach did, for the answer, the log and an audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attached {
    /// The request this was for.
    pub request_id: String,
    /// PubMd5 of the key (and the certificate's public key).
    pub pub_md5: String,
    /// RFC 7512 URI of the private key.
    pub key_uri: String,
    /// False when the same certificate was already on the token.
    pub stored: bool,
    /// Older certificates of the key this one displaced.
    pub replaced: usize,
}

/// What may be stored, and when "now" is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachPolicy {
    /// Most certificates one key keeps (`[service] max_certificates_per_key`).
    pub max_per_key: usize,
    /// Seconds since the Unix epoch.
    pub now: u64,
}

impl AttachPolicy {
    /// `max_per_key` certificates per key, checked against this host's clock.
    pub fn now(max_per_key: usize) -> AttachPolicy {
        AttachPolicy {
            max_per_key: max_per_key.max(1),
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The public keys (SHA-256 of their SPKI) whose certificates a call of
/// this process is attaching: two calls for one key take turns, calls for
/// different keys never wait for each other.
static ATTACHING: Mutex<Vec<[u8; 32]>> = Mutex::new(Vec::new());
static ATTACHED: Condvar = Condvar::new();

/// Held while a call looks for one key's certificates and stores one.
struct KeyTurn([u8; 32]);

impl KeyTurn {
    fn take(spki: &[u8]) -> KeyTurn {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let mut busy = ATTACHING.lock().unwrap_or_else(|p| p.into_inner());
        while busy.contains(&key) {
            busy = ATTACHED.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.push(key);
        KeyTurn(key)
    }
}

impl Drop for KeyTurn {
    fn drop(&mut self) {
        let mut busy = ATTACHING.lock().unwrap_or_else(|p| p.into_inner());
        busy.retain(|k| *k != self.0);
        ATTACHED.notify_all();
    }
}

/// Stores `cert` beside `who`'s key it was issued for on `backend`'s
/// token, once it covers `domain` (when given) and `policy` allows it.
/// `deliver` hands the result to whoever asked and says whether it was
/// taken; a certificate stored by this call is removed again when it was
/// not (as a key pair whose CSR was not taken is), and the certificates
/// it displaces are removed only when it was. An audit record belongs in
/// `deliver`: written (or not) before the answer is released, and a
/// failure to write it answers false.
///
/// # Errors
/// `Certificate.MissMatch` (or `InvalidValue.Malformed` for a domain that
/// is no DNS name) and the refusals of `ParsedCertificate::check_storable`
/// before the token is touched; `Certificate.NoPrivateKey` when none of
/// `who`'s keys has the certificate's public key; `Certificate.Outdated`
/// when the key keeps newer certificates only; a token error when the
/// token cannot be searched or store the certificate.
pub fn attach_certificate(
    backend: &mut dyn KeyInventory,
    cert: &ParsedCertificate,
    domain: Option<&str>,
    who: &Principal,
    policy: AttachPolicy,
    request_id: &str,
    deliver: &mut dyn FnMut(&Attached) -> bool,
) -> Result<Attached> {
    if let Some(domain) = domain {
        cert.check_domain(domain)?;
    }
    cert.check_storable(policy.now)?;
    let spki = cert.spki_der()?;
    let pub_md5 = crate::fingerprint::pub_md5(&spki);
    let _one_at_a_time = KeyTurn::take(&spki);
    // Without `all_keys`, the store searches the caller's own keys only.
    let mine = (!who.all_keys).then_some(&who.owner);
    let key = backend
        .find_by_public_key(&spki, mine)?
        .filter(|k| who.may_use(k.owner.as_ref()))
        .ok_or_else(|| Error::CertificateNoPrivateKey {
            token: backend.store_name(),
            pub_md5: pub_md5.clone(),
        })?;
    let mut attached = Attached {
        request_id: request_id.to_owned(),
        pub_md5,
        key_uri: key.uri.clone(),
        stored: false,
        replaced: 0,
    };
    if key.certificates.iter().any(|c| c.der == cert.der) {
        deliver(&attached);
        return Ok(attached);
    }
    let displaced = displaced_by(&key, cert, policy.max_per_key)?;
    let stored = Some(backend.store_certificate_for(&key, &cert.der)?);
    attached.stored = true;
    attached.replaced = displaced.len();
    if deliver(&attached) {
        for old in displaced {
            if let Err(e) = backend.remove_certificate(old) {
                log::error!(
                    "RequestId={request_id}: could not remove a displaced certificate beside {}: {e}",
                    key.uri
                );
            }
        }
    } else if let Some(object) = stored {
        match backend.remove_certificate(object) {
            Ok(()) => log::warn!(
                "nobody took the answer of RequestId={request_id}; the certificate it stored was removed"
            ),
            Err(e) => log::error!(
                "could not remove the undelivered certificate of RequestId={request_id} beside {}: {e}",
                key.uri
            ),
        }
    }
    Ok(attached)
}

/// When a certificate begins and ends, for ordering a key's certificates;
/// what does not decode counts as the oldest.
fn validity(der: &[u8]) -> (u64, u64) {
    use der::Decode;
    x509_cert::Certificate::from_der(der).map_or((0, 0), |c| {
        let v = c.tbs_certificate().validity();
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    })
}

/// The certificates of `key` that `cert` displaces so that the key keeps
/// at most `max_per_key`, the newest by notBefore (then notAfter).
///
/// # Errors
/// `Certificate.Outdated` when `cert` would itself be the one to go.
fn displaced_by(key: &StoredKey, cert: &ParsedCertificate, max_per_key: usize) -> Result<Vec<u64>> {
    let max = max_per_key.max(1);
    let mut all: Vec<((u64, u64), Option<u64>)> = key
        .certificates
        .iter()
        .map(|c| (validity(&c.der), Some(c.object)))
        .collect();
    all.push((validity(&cert.der), None));
    // Oldest first; among equals the new one stays, being the latest.
    all.sort_by_key(|(when, object)| (*when, object.is_none()));
    let excess = all.len().saturating_sub(max);
    let going: Vec<Option<u64>> = all.drain(..excess).map(|(_, o)| o).collect();
    if going.iter().any(Option::is_none) {
        return Err(Error::CertificateOutdated { kept: max });
    }
    Ok(going.into_iter().flatten().collect())
}
