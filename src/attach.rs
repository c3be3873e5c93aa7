//! Attaching a CA's certificate to the key pair it was issued for: what
//! `hsm-csr attach-cert` and the service's SetCdnDomainCSRCertificate /
//! SetDcdnDomainCSRCertificate both do, through [`attach_certificate`].
//!
//! The key is found by its whole public key (the DER SubjectPublicKeyInfo,
//! not only its PubMd5), among keys whose private half is on the token;
//! the certificate is stored beside it as a CKO_CERTIFICATE with the key's
//! CKA_ID and CKA_LABEL (PKCS #11 v2.40 section 4.6: a certificate and
//! its key share CKA_ID). Only the leaf is stored; a chain's other
//! certificates are checked to be certificates and dropped.
//!
//! Attaching is idempotent: the same certificate twice is stored once.
//! Within a process, attaches run one at a time, so that two calls with
//! the same certificate cannot both find it missing and store it twice.

use std::sync::Mutex;

use serde::Serialize;

use crate::backend::pkcs11::Pkcs11Backend;
use crate::certificate::ParsedCertificate;
use crate::error::{Error, Result};

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
}

/// Held while a process looks for a certificate on the token and stores it.
static ATTACHING: Mutex<()> = Mutex::new(());

/// Stores `cert` beside the key it was issued for on `backend`'s token,
/// once it covers `domain` (when given). `deliver` hands the result to
/// whoever asked and says whether it was taken; a certificate stored by
/// this call is removed again when it was not, as a key pair whose CSR was
/// not taken is. An audit record belongs in `deliver`: written (or not)
/// before the answer is released, and a failure to write it answers false.
///
/// # Errors
/// `Certificate.MissMatch` (or `InvalidValue.Malformed` for a domain that
/// is no DNS name) before the token is touched; `Certificate.NoPrivateKey`
/// when no key on the token has the certificate's public key; a token
/// error when the token cannot list keys or store the certificate.
pub fn attach_certificate(
    backend: &mut Pkcs11Backend,
    cert: &ParsedCertificate,
    domain: Option<&str>,
    request_id: &str,
    deliver: &mut dyn FnMut(&Attached) -> bool,
) -> Result<Attached> {
    if let Some(domain) = domain {
        cert.check_domain(domain)?;
    }
    let spki = cert.spki_der()?;
    let _one_at_a_time = ATTACHING.lock().unwrap_or_else(|p| p.into_inner());
    let keys = backend.list_keys()?;
    let key = keys
        .iter()
        .find(|k| k.has_private_key && k.spki_der() == Some(spki.as_slice()))
        .ok_or_else(|| Error::CertificateNoPrivateKey {
            token: backend.token_label().to_owned(),
            pub_md5: crate::fingerprint::pub_md5(&spki),
        })?;
    let stored = backend.attach_certificate(key, &cert.der)?;
    let attached = Attached {
        request_id: request_id.to_owned(),
        pub_md5: crate::fingerprint::pub_md5(&spki),
        key_uri: key.key_uri.clone(),
        stored: stored.is_some(),
    };
    if !deliver(&attached) {
        if let Some(object) = stored {
            match backend.remove_certificate(object) {
                Ok(()) => log::warn!(
                    "nobody took the answer of RequestId={request_id}; the certificate it stored was removed"
                ),
                Err(e) => log::error!(
                    "could not remove the undelivered certificate of RequestId={request_id} beside {}: {e}",
                    key.key_uri
                ),
            }
        }
    }
    Ok(attached)
}
