//! SubjectPublicKeyInfo for an RSA public key read from the token.
//!
//! RFC 5280 section 4.1.2.7 and RFC 8017 appendix A.1.1:
//!
//! ```text
//! SubjectPublicKeyInfo  ::=  SEQUENCE  {
//!      algorithm            AlgorithmIdentifier,   -- rsaEncryption, parameters NULL
//!      subjectPublicKey     BIT STRING  }          -- DER of RSAPublicKey
//!
//! RSAPublicKey ::= SEQUENCE {
//!     modulus           INTEGER,  -- n
//!     publicExponent    INTEGER   -- e
//! }
//! ```

use const_oid::db::rfc5912::RSA_ENCRYPTION;
use der::asn1::{Any, BitString, UintRef};
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::error::{Error, Result};

/// `RSAPublicKey`, borrowing the big-endian magnitudes from the token.
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// The DER SubjectPublicKeyInfo of the RSA key `(modulus, exponent)`, both
/// unsigned big-endian as PKCS#11 returns CKA_MODULUS and CKA_PUBLIC_EXPONENT.
pub fn rsa_spki_der(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>> {
    let encode = || -> der::Result<Vec<u8>> {
        let key = RsaPublicKey {
            modulus: UintRef::new(modulus)?,
            public_exponent: UintRef::new(exponent)?,
        };
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            subject_public_key: BitString::from_bytes(&key.to_der()?)?,
        }
        .to_der()
    };
    encode().map_err(|e| Error::EncodeKey(format!("RSA public key: {e}")))
}

/// Size in bits of the modulus in an RSA SubjectPublicKeyInfo.
pub fn rsa_modulus_bits(spki_der: &[u8]) -> Result<u32> {
    let parse = || -> der::Result<u32> {
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
        let key_der = spki.subject_public_key.raw_bytes();
        let key = RsaPublicKey::from_der(key_der)?;
        let m = key.modulus.as_bytes();
        let lead = m.first().map_or(0, |b| 8 - b.leading_zeros());
        Ok((m.len().saturating_sub(1) * 8) as u32 + lead)
    };
    parse().map_err(|e| Error::EncodeKey(format!("RSA public key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zero_and_sign_bit_are_handled() {
        // A modulus with the top bit set needs a 0x00 pad; a PKCS#11 value
        // with a redundant leading zero must not get a second one.
        let m = [0x80u8, 0, 0, 1];
        let a = rsa_spki_der(&m, &[1, 0, 1]).unwrap();
        let b = rsa_spki_der(&[0, 0x80, 0, 0, 1], &[0, 1, 0, 1]).unwrap();
        assert_eq!(a, b);
        assert_eq!(rsa_modulus_bits(&a).unwrap(), 32);
    }
}

#[cfg(test)]
mod known_answer {
    use super::*;

    /// Rebuilding the fixture key's SPKI from its modulus and exponent gives
    /// the bytes `openssl pkey -pubout -outform DER` wrote.
    #[test]
    fn matches_openssl() {
        let hex = include_str!("../tests/fixtures/rsa2048-modulus.hex").trim();
        let modulus: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let spki = rsa_spki_der(&modulus, &[1, 0, 1]).unwrap();
        assert_eq!(spki, include_bytes!("../tests/fixtures/rsa2048-spki.der"));
        assert_eq!(rsa_modulus_bits(&spki).unwrap(), 2048);
    }
}
