//! Signing the CertificationRequestInfo on the token.
//!
//! `CKM_SHA256_RSA_PKCS` hashes and pads inside the token (PKCS #11 v2.40
//! section 2.1.14): the input is the DER CertificationRequestInfo itself and
//! the output is the RSASSA-PKCS1-v1_5 signature of RFC 8017 section 8.2.

use cryptoki::mechanism::Mechanism;

use super::{Pkcs11Backend, describe};
use crate::backend::GeneratedKey;
use crate::csr::SignatureAlgorithm;
use crate::error::{Error, Result};

pub(super) fn sign(
    backend: &mut Pkcs11Backend,
    key: &GeneratedKey,
    alg: SignatureAlgorithm,
    data: &[u8],
) -> Result<Vec<u8>> {
    let pair = backend.pair(key)?;
    let mechanism = match alg {
        SignatureAlgorithm::Sha256WithRsa => Mechanism::Sha256RsaPkcs,
    };
    backend
        .session()?
        .sign(&mechanism, pair.private, data)
        .map_err(|e| Error::CreateCsr(describe(&e)))
}
