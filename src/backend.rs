//! Where keys live: a small trait, with PKCS#11 as its implementation.
//!
//! The CSR logic in [`crate::prepare_csr`] only ever sees bytes: a DER
//! SubjectPublicKeyInfo out of [`KeyBackend::generate`], a DER
//! CertificationRequestInfo into [`KeyBackend::sign`]. No method returns
//! private key material, and none can be asked to.

mod key_entry;
pub mod pkcs11;

pub use key_entry::KeyEntry;

#[cfg(test)]
pub(crate) mod mock;

use crate::algorithm::{KeyType, SignatureAlgorithm};
use crate::error::Result;
use crate::owner::Owner;

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
    /// Who the pair belongs to, recorded on the token ([`crate::owner`]);
    /// None for a pool key, which gets its owner when it is taken.
    pub owner: Option<Owner>,
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
    /// `pkcs11::mark`). A backend without such marks does nothing.
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

/// A delivered key pair already on the store, as [`KeyInventory`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    /// CKA_ID shared by its objects.
    pub id: Vec<u8>,
    /// CKA_LABEL.
    pub label: String,
    /// RFC 7512 URI of the private key.
    pub uri: String,
    /// PubMd5 of its public key.
    pub pub_md5: String,
    /// Who it belongs to; None when no owner is recorded.
    pub owner: Option<Owner>,
    /// The certificates stored beside it.
    pub certificates: Vec<StoredCertificate>,
}

/// A certificate stored beside a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCertificate {
    /// Backend-specific object handle, for [`KeyInventory::remove_certificate`].
    pub object: u64,
    /// The certificate's DER.
    pub der: Vec<u8>,
}

/// What a listed key is, by the store's own marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Handed to a caller (or made by another tool).
    Delivered,
    /// Not yet delivered; whether the process making it has stopped.
    Undelivered {
        /// The process that made it no longer runs: nobody will deliver it.
        owner_stopped: bool,
    },
    /// An unassigned pool key (whole or torn).
    Pooled,
}

/// What is on the store already: listing, finding and removing keys,
/// counting, and the certificates beside keys. Who may do what is decided
/// above it, in one place ([`crate::attach`], [`crate::quota`],
/// [`crate::retention`]). Every method a request's path calls
/// ([`Self::find_by_public_key`], [`Self::count_owned`], the certificate
/// methods) costs a bounded number of calls to the store, however many
/// keys it holds; [`Self::list_keys`] reads every object, and is for the
/// command line and `serve`'s periodic pass.
pub trait KeyInventory {
    /// The store's name, for messages and logs.
    fn store_name(&self) -> String;

    /// Every key pair (and lone object) on the store, sorted by label.
    ///
    /// # Errors
    /// A store error.
    fn list_keys(&mut self) -> Result<Vec<KeyEntry>>;

    /// Removes every object of `key` (keys and certificates), from this
    /// store's last listing or lookup.
    ///
    /// # Errors
    /// `Key.NotFound` for a key it did not list; a store error.
    fn delete_key(&mut self, key: &KeyEntry) -> Result<()>;

    /// What the store's marks make of `key`.
    fn state_of(&self, key: &KeyEntry) -> KeyState {
        let _ = key;
        KeyState::Delivered
    }

    /// Whether `key`, listed as a lone or torn object, still is: its
    /// objects searched for again by CKA_ID, and what [`Self::delete_key`]
    /// would remove set to what carries that CKA_ID now.
    ///
    /// # Errors
    /// A store error.
    fn confirm_orphan(&mut self, key: &KeyEntry) -> Result<bool> {
        let _ = key;
        Ok(true)
    }

    /// Removes an undelivered key whose process stopped, under every form
    /// a cut-off delivery can have left it in.
    ///
    /// # Errors
    /// A store error.
    fn retire_undelivered(&mut self, key: &KeyEntry) -> Result<()> {
        self.delete_key(key)
    }

    /// The delivered key pair whose public key is `spki_der` (its private
    /// half on the store), with its owner and certificates; with `owner`,
    /// only that owner's (the store searches with the owner in its
    /// template, so another owner's key costs what a missing one does).
    ///
    /// # Errors
    /// `Certificate.FormatError` for a key type the store cannot hold; a
    /// store error.
    fn find_by_public_key(
        &mut self,
        spki_der: &[u8],
        owner: Option<&Owner>,
    ) -> Result<Option<StoredKey>>;

    /// How many key pairs `owner` has on the store, counted up to
    /// `limit + 1` (enough to tell whether it passed `limit`).
    ///
    /// # Errors
    /// A store error.
    fn count_owned(&mut self, owner: &Owner, limit: usize) -> Result<usize>;

    /// Stores `cert_der` beside `key`; its object handle.
    ///
    /// # Errors
    /// `Token.MechanismUnsupported` from stores that keep no certificates;
    /// `ServiceUnavailable` when the store is full; a store error.
    fn store_certificate_for(&mut self, key: &StoredKey, cert_der: &[u8]) -> Result<u64>;

    /// Removes a certificate [`Self::store_certificate_for`] stored, or one
    /// [`Self::find_by_public_key`] listed.
    ///
    /// # Errors
    /// A store error.
    fn remove_certificate(&mut self, object: u64) -> Result<()>;
}
