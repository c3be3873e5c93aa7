//! An in-memory backend for unit tests of the issuing logic. It signs with a
//! fixed test key through `ring`; integration tests use real tokens.

use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::algorithm::SignatureAlgorithm;
use crate::backend::{
    GeneratedKey, KeyBackend, KeyEntry, KeyHandles, KeyInventory, KeySpec, StoredCertificate,
    StoredKey,
};
use crate::owner::Owner;
use cryptoki::context::Function;
use cryptoki::error::RvError;

use crate::error::{Detail, Error, Result};

pub(crate) const SPKI: &[u8] = include_bytes!("../../tests/fixtures/mock-rsa2048-spki.der");
const PKCS1: &[u8] = include_bytes!("../../tests/fixtures/mock-rsa2048.der");

#[derive(Default)]
pub(crate) struct MockBackend {
    pub fail_sign: bool,
    pub corrupt_signature: bool,
    pub fail_destroy: bool,
    /// Key pairs on the mock token.
    pub live: Vec<KeyHandles>,
    /// Key pairs whose handles the backend still keeps, as a PKCS#11
    /// session does until `destroy` or `forget`.
    pub tracked: Vec<KeyHandles>,
    pub generated: u64,
    /// Generate calls still to fail with CKR_SESSION_HANDLE_INVALID.
    pub lose_session_on_generate: u32,
    /// Which session this is (0 for the first).
    pub session: u32,
    /// The owner each live pair was made for, by private handle.
    pub owners: Vec<(u64, Option<Owner>)>,
    /// Certificates stored beside keys.
    pub certificates: Vec<MockCertificate>,
    /// The store is full: keygen and certificates are refused.
    pub full: bool,
    /// How many pairs were given their final identity
    /// ([`KeyBackend::settle`]), readable while a caller borrows the mock.
    pub settles: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A certificate on the mock store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MockCertificate {
    pub object: u64,
    /// Private handle of its key.
    pub key: u64,
    pub der: Vec<u8>,
}

impl KeyBackend for MockBackend {
    fn generate(&mut self, spec: &KeySpec) -> Result<GeneratedKey> {
        if self.lose_session_on_generate > 0 {
            self.lose_session_on_generate -= 1;
            return Err(Error::KeyGen(pkcs11_failure(
                Function::GenerateKeyPair,
                RvError::SessionHandleInvalid,
            )));
        }
        if self.full {
            return Err(self.full_error());
        }
        self.generated += 1;
        let handles = KeyHandles {
            private: self.generated * 2,
            public: self.generated * 2 + 1,
        };
        self.live.push(handles);
        self.tracked.push(handles);
        self.owners.push((handles.private, spec.owner.clone()));
        Ok(GeneratedKey {
            handles,
            key_type: spec.key_type,
            spki_der: SPKI.to_vec(),
            id: vec![0xab; 16],
            label: spec.label.clone(),
            uri: format!("pkcs11:object={}", spec.label),
        })
    }

    fn sign(
        &mut self,
        key: &GeneratedKey,
        alg: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.check_tracked(key)?;
        if self.fail_sign {
            return Err(Error::CreateCsr("mock: sign refused".into()));
        }
        assert_eq!(
            alg,
            SignatureAlgorithm::RsaPkcs1(crate::Hash::Sha256),
            "mock signs RSA/SHA-256 only"
        );
        let key = RsaKeyPair::from_der(PKCS1).map_err(|e| Error::Internal(e.to_string()))?;
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            data,
            &mut sig,
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        if self.corrupt_signature {
            sig[10] ^= 1;
        }
        Ok(sig)
    }

    fn destroy(&mut self, key: &GeneratedKey) -> Result<()> {
        self.check_tracked(key)?;
        if self.fail_destroy {
            return Err(Error::Internal("mock: destroy refused".into()));
        }
        self.live.retain(|h| *h != key.handles);
        self.owners.retain(|(h, _)| *h != key.handles.private);
        self.forget(key);
        Ok(())
    }

    fn forget(&mut self, key: &GeneratedKey) {
        self.tracked.retain(|h| *h != key.handles);
    }

    fn settle(&mut self, key: &GeneratedKey) -> Result<()> {
        self.check_tracked(key)?;
        self.settles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// What a PKCS#11 module's `function` answering `rv` makes of an error.
pub(crate) fn pkcs11_failure(function: Function, rv: RvError) -> Detail {
    Detail::pkcs11(&cryptoki::error::Error::Pkcs11(rv, function))
}

impl MockBackend {
    fn check_tracked(&self, key: &GeneratedKey) -> Result<()> {
        if self.tracked.contains(&key.handles) {
            Ok(())
        } else {
            Err(Error::Internal(
                "mock: key pair was not made by this session".into(),
            ))
        }
    }
}

impl MockBackend {
    fn full_error(&self) -> Error {
        Error::TokenFull {
            token: "mock".into(),
            objects: self.live.len() * 2 + self.certificates.len(),
            max_objects: self.live.len() * 2 + self.certificates.len(),
        }
    }

    /// The delivered pairs: on the store and no longer tracked.
    fn delivered(&self) -> impl Iterator<Item = &KeyHandles> {
        self.live.iter().filter(|h| !self.tracked.contains(h))
    }

    fn owner_of(&self, private: u64) -> Option<Owner> {
        self.owners
            .iter()
            .find(|(h, _)| *h == private)
            .and_then(|(_, o)| o.clone())
    }
}

/// Every mock key has the one public key [`SPKI`]: the first delivered
/// pair is "the" key with that public key.
impl KeyInventory for MockBackend {
    fn store_name(&self) -> String {
        "mock".into()
    }

    /// Every live pair, labelled `mock`, delivered today, its CKA_ID the
    /// private handle.
    fn list_keys(&mut self) -> Result<Vec<KeyEntry>> {
        Ok(self
            .live
            .iter()
            .map(|h| {
                let mut k = KeyEntry::new(
                    "mock".into(),
                    h.private.to_be_bytes().to_vec(),
                    "pkcs11:object=mock".into(),
                )
                .with_public_key(
                    Some(crate::KeyType::Rsa { bits: 2048 }),
                    Some(SPKI.to_vec()),
                );
                k.has_private_key = true;
                k.has_public_key = true;
                k.owner = self.owner_of(h.private).map(|o| o.as_str().to_owned());
                k.delivered = Some(crate::day::Day::today());
                k.set_certificates(
                    self.certificates
                        .iter()
                        .filter(|c| c.key == h.private)
                        .map(|c| c.der.clone())
                        .collect(),
                );
                k
            })
            .collect())
    }

    fn delete_key(&mut self, key: &KeyEntry) -> Result<()> {
        let private = u64::from_be_bytes(
            key.id_bytes()
                .try_into()
                .map_err(|_| Error::Internal("mock: not a mock key".into()))?,
        );
        self.live.retain(|h| h.private != private);
        self.tracked.retain(|h| h.private != private);
        self.owners.retain(|(h, _)| *h != private);
        self.certificates.retain(|c| c.key != private);
        Ok(())
    }

    fn state_of(&self, key: &KeyEntry) -> crate::backend::KeyState {
        let tracked = self
            .tracked
            .iter()
            .any(|h| h.private.to_be_bytes().as_slice() == key.id_bytes());
        if tracked {
            crate::backend::KeyState::Undelivered {
                owner_stopped: false,
            }
        } else {
            crate::backend::KeyState::Delivered
        }
    }

    fn find_by_public_key(
        &mut self,
        spki_der: &[u8],
        owner: Option<&Owner>,
    ) -> Result<Option<StoredKey>> {
        if spki_der != SPKI {
            return Ok(None);
        }
        let Some(private) = self
            .delivered()
            .map(|h| h.private)
            .find(|h| owner.is_none_or(|o| self.owner_of(*h).as_ref() == Some(o)))
        else {
            return Ok(None);
        };
        Ok(Some(StoredKey {
            id: private.to_be_bytes().to_vec(),
            label: "mock".into(),
            uri: "pkcs11:object=mock".into(),
            pub_md5: crate::fingerprint::pub_md5(SPKI),
            owner: self.owner_of(private),
            certificates: self
                .certificates
                .iter()
                .filter(|c| c.key == private)
                .map(|c| StoredCertificate {
                    object: c.object,
                    der: c.der.clone(),
                })
                .collect(),
        }))
    }

    fn count_owned(&mut self, owner: &Owner, limit: usize) -> Result<usize> {
        let n = self
            .owners
            .iter()
            .filter(|(_, o)| o.as_ref() == Some(owner))
            .count();
        Ok(n.min(limit.saturating_add(1)))
    }

    fn store_certificate_for(&mut self, key: &StoredKey, cert_der: &[u8]) -> Result<u64> {
        if self.full {
            return Err(self.full_error());
        }
        let key = u64::from_be_bytes(
            key.id
                .as_slice()
                .try_into()
                .map_err(|_| Error::Internal("mock: not a mock key".into()))?,
        );
        let object = self
            .certificates
            .iter()
            .map(|c| c.object)
            .max()
            .unwrap_or(1_000_000)
            + 1;
        self.certificates.push(MockCertificate {
            object,
            key,
            der: cert_der.to_vec(),
        });
        Ok(object)
    }

    fn remove_certificate(&mut self, object: u64) -> Result<()> {
        let before = self.certificates.len();
        self.certificates.retain(|c| c.object != object);
        if self.certificates.len() == before {
            return Err(Error::Internal("mock: no such certificate".into()));
        }
        Ok(())
    }
}
