//! Where keys live: a small trait, with PKCS#11 as its implementation.
//!
//! The CSR logic in [`crate::issue`] only ever sees bytes: a DER
//! SubjectPublicKeyInfo out of [`KeyBackend::generate`], a DER
//! CertificationRequestInfo into [`KeyBackend::sign`]. No method returns
//! private key material, and none can be asked to.

pub mod pkcs11;

#[cfg(test)]
pub(crate) mod mock;

use crate::algorithm::{KeyType, SignatureAlgorithm};
use crate::error::Result;

/// What key to make, and how it will sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Key type (and RSA size).
    pub key_type: KeyType,
    /// The signature the key will make; a backend that cannot make it must
    /// refuse before generating anything.
    pub signature: SignatureAlgorithm,
    /// CKA_LABEL for both objects of the pair.
    pub label: String,
    /// CKA_LABEL of the pair until it is delivered (see [`KeyBackend::settle`]).
    pub undelivered_label: String,
}

/// Backend-specific object handles of a key pair. Meaningful only to the
/// backend that returned them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHandles {
    /// The private key object.
    pub private: u64,
    /// The public key object.
    pub public: u64,
}

/// A key pair the backend just made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedKey {
    /// Object handles, for `sign` and `destroy`.
    pub handles: KeyHandles,
    /// Key type.
    pub key_type: KeyType,
    /// DER SubjectPublicKeyInfo of the public key.
    pub spki_der: Vec<u8>,
    /// CKA_ID shared by both objects.
    pub id: Vec<u8>,
    /// CKA_LABEL shared by both objects.
    pub label: String,
    /// RFC 7512 URI of the private key.
    pub uri: String,
}

/// A store that can make a key pair, sign with it, and remove it.
///
/// Issuing a CSR is:
/// 1. `generate` a key pair (the backend removes anything it made if this
///    step itself fails half-way);
/// 2. build the CertificationRequestInfo over the returned public key;
/// 3. `sign` its DER with the private key;
/// 4. `settle` the pair: give it the identity (CKA_ID, label) the response
///    names; until then it carries a "not yet delivered" mark;
/// 5. if anything after step 1 fails, `destroy` the pair before returning
///    the error;
/// 6. once the CSR is delivered, `forget` the pair: it stays on the token,
///    and the backend need not remember it any more.
pub trait KeyBackend {
    /// Makes a key pair as `spec` says and returns its public half.
    ///
    /// # Errors
    /// `Token.MechanismUnsupported` (before anything is made) when the
    /// token cannot make this key or this signature, `Internal.KeyError` when
    /// generation fails, `Internal.EncodeKeyError` when the public key cannot
    /// be read.
    fn generate(&mut self, spec: &KeySpec) -> Result<GeneratedKey>;

    /// Signs `data` with the private key of `key` and returns the signature
    /// as the token gives it (raw `r || s` for ECDSA).
    ///
    /// # Errors
    /// `Internal.CreateCSRError` when the token refuses.
    fn sign(&mut self, key: &GeneratedKey, alg: SignatureAlgorithm, data: &[u8])
    -> Result<Vec<u8>>;

    /// Removes both objects of `key`.
    ///
    /// # Errors
    /// A token error when an object cannot be destroyed.
    fn destroy(&mut self, key: &GeneratedKey) -> Result<()>;

    /// Gives `key` the CKA_ID and label it names, just before its response
    /// is handed over; until then it is marked as not yet delivered (see
    /// [`pkcs11::mark`]). A backend without such marks does nothing.
    ///
    /// # Errors
    /// A token error when the change fails; the caller then destroys `key`.
    fn settle(&mut self, key: &GeneratedKey) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// Drops whatever the backend keeps to `sign` with or `destroy` `key`:
    /// its CSR was delivered and the pair stays on the token. Without this
    /// a long-lived session would remember one entry per CSR, forever.
    /// `key` is not used afterwards.
    fn forget(&mut self, key: &GeneratedKey);

    /// Stores a certificate issued for `key` beside it (same CKA_ID and
    /// CKA_LABEL), before the pair is committed: `hsm-csr acme issue`
    /// keeps the key only once its certificate is on the token too.
    ///
    /// # Errors
    /// `Token.MechanismUnsupported` from backends that keep no
    /// certificates; a token error when the token refuses.
    fn store_certificate(&mut self, key: &GeneratedKey, cert_der: &[u8]) -> Result<()> {
        let _ = (key, cert_der);
        Err(crate::error::Error::Unsupported {
            token: String::new(),
            what: "storing certificates".into(),
        })
    }
}
