//! Checks every signature on the host before a CSR is returned: a token
//! that signs wrongly (a bad DigestInfo, a wrong PSS salt, a swapped r/s)
//! is caught here instead of by the CA. Verification only; `ring` never
//! sees a private key.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use crate::algorithm::{Hash, KeyType, SignatureAlgorithm};
use crate::error::{Error, Result};
use crate::spki;

/// Verifies `signature` (in X.509 form) over `message` with the key in
/// `spki_der`.
///
/// # Errors
/// `Internal.CreateCSRError` when the signature does not verify.
pub(crate) fn token_signature(
    key_type: KeyType,
    alg: SignatureAlgorithm,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    let verifier: &dyn VerificationAlgorithm = match (alg, key_type) {
        (SignatureAlgorithm::RsaPkcs1(h), KeyType::Rsa { .. }) => match h {
            Hash::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Hash::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Hash::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        },
        (SignatureAlgorithm::RsaPss(h), KeyType::Rsa { .. }) => match h {
            Hash::Sha256 => &signature::RSA_PSS_2048_8192_SHA256,
            Hash::Sha384 => &signature::RSA_PSS_2048_8192_SHA384,
            Hash::Sha512 => &signature::RSA_PSS_2048_8192_SHA512,
        },
        (SignatureAlgorithm::Ecdsa(Hash::Sha256), KeyType::EcP256) => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        (SignatureAlgorithm::Ecdsa(Hash::Sha384), KeyType::EcP256) => {
            &signature::ECDSA_P256_SHA384_ASN1
        }
        (SignatureAlgorithm::Ecdsa(Hash::Sha256), KeyType::EcP384) => {
            &signature::ECDSA_P384_SHA256_ASN1
        }
        (SignatureAlgorithm::Ecdsa(Hash::Sha384), KeyType::EcP384) => {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        (SignatureAlgorithm::Ed25519, KeyType::Ed25519) => &signature::ED25519,
        _ => {
            return Err(Error::Internal(format!(
                "no verifier for {alg} with a {key_type} key"
            )));
        }
    };
    let public_key = spki::subject_public_key(spki_der)?;
    UnparsedPublicKey::new(verifier, public_key)
        .verify(message, signature)
        .map_err(|_| {
            Error::CreateCsr(
                format!("the token's {alg} signature does not verify against the new public key")
                    .into(),
            )
        })
}
