//! How keys are made and named, checked once ([`KeyOptions::validate`]).

use crate::algorithm::{Hash, KeyType, RSA_SIZES, SignatureAlgorithm};
use crate::error::{Error, Result};
use crate::owner::Owner;

/// How keys are made, how they sign, and how they are named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOptions {
    /// Key type; default RSA-2048 (the API's).
    pub key_type: KeyType,
    /// Signature hash; default SHA-256 (SHA-384 for P-384).
    pub hash: Option<Hash>,
    /// RSASSA-PSS instead of PKCS#1 v1.5 (RSA only).
    pub pss: bool,
    /// CKA_LABEL is this prefix followed by the common name.
    pub label_prefix: String,
}

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions {
            key_type: KeyType::Rsa { bits: 2048 },
            hash: None,
            pss: false,
            label_prefix: "hsm-csr:".into(),
        }
    }
}

impl KeyOptions {
    /// Checks the options, once, and works out the signature algorithm
    /// they mean.
    ///
    /// # Errors
    /// `Config.Invalid` for an RSA size other than 2048, 3072 or 4096, or a
    /// hash or `pss` that does not fit the key type.
    pub fn validate(&self) -> Result<ValidKeyOptions> {
        if let KeyType::Rsa { bits } = self.key_type {
            if !RSA_SIZES.contains(&bits) {
                return Err(Error::Config(format!(
                    "key size {bits} is not supported; use 2048, 3072 or 4096."
                )));
            }
        }
        Ok(ValidKeyOptions {
            key_type: self.key_type,
            signature: SignatureAlgorithm::for_key(self.key_type, self.hash, self.pss)?,
            label_prefix: self.label_prefix.clone(),
            owner: None,
        })
    }
}

/// [`KeyOptions`] that passed [`KeyOptions::validate`]: a key type the
/// crate makes, and the signature algorithm it signs with. The only way
/// options reach [`crate::prepare_csr`], so nothing downstream checks
/// them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidKeyOptions {
    key_type: KeyType,
    signature: SignatureAlgorithm,
    label_prefix: String,
    owner: Option<Owner>,
}

impl ValidKeyOptions {
    /// The same options, for keys that belong to `owner` ([`crate::owner`]).
    #[must_use]
    pub fn owned_by(&self, owner: Owner) -> ValidKeyOptions {
        ValidKeyOptions {
            owner: Some(owner),
            ..self.clone()
        }
    }

    /// Who the keys made with these options belong to; None: nobody
    /// (keys made before owners were recorded look the same).
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }

    /// Key type (and RSA size).
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The signature algorithm.
    pub fn signature(&self) -> SignatureAlgorithm {
        self.signature
    }

    /// The CKA_LABEL prefix; the common name follows it.
    pub fn label_prefix(&self) -> &str {
        &self.label_prefix
    }

    /// The CKA_LABEL a kept key for `request` gets: the prefix, then the
    /// common name.
    pub fn label_for(&self, request: &crate::request::ValidRequest) -> String {
        format!("{}{}", self.label_prefix, request.common_name)
    }
}

impl Default for ValidKeyOptions {
    /// RSA-2048 with PKCS #1 v1.5 and SHA-256, as [`KeyOptions::default`].
    fn default() -> Self {
        ValidKeyOptions {
            key_type: KeyType::Rsa { bits: 2048 },
            signature: SignatureAlgorithm::RsaPkcs1(Hash::Sha256),
            label_prefix: KeyOptions::default().label_prefix,
            owner: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_default_validated() {
        assert_eq!(
            KeyOptions::default().validate().unwrap(),
            ValidKeyOptions::default()
        );
    }
}
