//! An in-memory backend for unit tests of the issuing logic. It signs
//! nothing real: integration tests use real tokens.

use crate::backend::{GeneratedKey, KeyBackend, KeyHandles, KeySpec};
use crate::csr::SignatureAlgorithm;
use crate::error::{Error, Result};

#[derive(Default)]
pub(crate) struct MockBackend {
    pub fail_sign: bool,
    pub fail_destroy: bool,
    pub live: Vec<KeyHandles>,
    pub generated: u64,
}

impl KeyBackend for MockBackend {
    fn generate(&mut self, spec: &KeySpec) -> Result<GeneratedKey> {
        self.generated += 1;
        let handles = KeyHandles {
            private: self.generated * 2,
            public: self.generated * 2 + 1,
        };
        self.live.push(handles);
        Ok(GeneratedKey {
            handles,
            spki_der: include_bytes!("../../tests/fixtures/rsa2048-spki.der").to_vec(),
            id: vec![0xab; 16],
            label: spec.label.clone(),
            uri: format!("pkcs11:object={}", spec.label),
        })
    }

    fn sign(&mut self, _: &GeneratedKey, _: SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>> {
        if self.fail_sign {
            return Err(Error::CreateCsr("mock: sign refused".into()));
        }
        Ok(vec![0x5a; 256])
    }

    fn destroy(&mut self, key: &GeneratedKey) -> Result<()> {
        if self.fail_destroy {
            return Err(Error::Internal("mock: destroy refused".into()));
        }
        self.live.retain(|h| *h != key.handles);
        Ok(())
    }
}
