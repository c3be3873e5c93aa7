//! An in-memory backend for unit tests of the issuing logic. It signs with a
//! fixed test key through `ring`; integration tests use real tokens.

use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::algorithm::SignatureAlgorithm;
use crate::backend::{GeneratedKey, KeyBackend, KeyHandles, KeySpec};
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
        self.generated += 1;
        let handles = KeyHandles {
            private: self.generated * 2,
            public: self.generated * 2 + 1,
        };
        self.live.push(handles);
        self.tracked.push(handles);
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
        self.forget(key);
        Ok(())
    }

    fn forget(&mut self, key: &GeneratedKey) {
        self.tracked.retain(|h| *h != key.handles);
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
