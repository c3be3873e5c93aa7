//! SubjectPublicKeyInfo for the public keys read from the token.
//!
//! RFC 5280 section 4.1.2.7 and RFC 8017 appendix A.1.1 (RSA):
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
//!
//! RFC 5480 section 2 (EC) and RFC 8410 section 4 (Ed25519):
//!
//! ```text
//! AlgorithmIdentifier { id-ecPublicKey, namedCurve }, subjectPublicKey = ECPoint (uncompressed 04 || X || Y)
//! AlgorithmIdentifier { id-Ed25519 },                 subjectPublicKey = the 32-byte public key
//! ```

use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION};
use der::asn1::{Any, BitString, OctetStringRef, UintRef};
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::algorithm::{ID_ED25519, KeyType};
use crate::error::{Error, Result};

/// `RSAPublicKey`, borrowing the big-endian magnitudes from the token.
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// The DER SubjectPublicKeyInfo of the RSA key `(modulus, exponent)`, both
/// unsigned big-endian as PKCS#11 returns CKA_MODULUS and CKA_PUBLIC_EXPONENT.
pub(crate) fn rsa_spki_der(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>> {
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
    encode().map_err(|e| Error::EncodeKey(format!("RSA public key: {e}").into()))
}

/// The DER SubjectPublicKeyInfo of an EC or Ed25519 key from its
/// CKA_EC_POINT. Tokens return the point DER-wrapped in an OCTET STRING (as
/// PKCS #11 says) or raw (some Ed25519 implementations); both are accepted.
pub(crate) fn ec_spki_der(key_type: KeyType, ec_point: &[u8]) -> Result<Vec<u8>> {
    let n = key_type.coordinate_len();
    let want = if key_type == KeyType::Ed25519 {
        n
    } else {
        2 * n + 1
    };
    let point = if ec_point.len() == want {
        ec_point
    } else {
        <&OctetStringRef>::from_der(ec_point)
            .ok()
            .map(OctetStringRef::as_bytes)
            .filter(|p| p.len() == want)
            .ok_or_else(|| {
                Error::EncodeKey(
                    format!(
                        "CKA_EC_POINT of {} bytes is not a {key_type} public key",
                        ec_point.len()
                    )
                    .into(),
                )
            })?
    };
    if key_type != KeyType::Ed25519 && point.first() != Some(&0x04) {
        return Err(Error::EncodeKey(
            "CKA_EC_POINT is not an uncompressed point".into(),
        ));
    }
    let algorithm = match key_type.curve() {
        Some(curve) => AlgorithmIdentifierOwned {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&curve)?),
        },
        None => AlgorithmIdentifierOwned {
            oid: ID_ED25519,
            parameters: None,
        },
    };
    SubjectPublicKeyInfoOwned {
        algorithm,
        subject_public_key: BitString::from_bytes(point)?,
    }
    .to_der()
    .map_err(|e| Error::EncodeKey(format!("{key_type} public key: {e}").into()))
}

/// Size in bits of the modulus in an RSA SubjectPublicKeyInfo.
pub(crate) fn rsa_modulus_bits(spki_der: &[u8]) -> Result<u32> {
    let parse = || -> der::Result<u32> {
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
        let key_der = spki.subject_public_key.raw_bytes();
        let key = RsaPublicKey::from_der(key_der)?;
        let m = key.modulus.as_bytes();
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(der::Tag::Sequence.value_error().into());
        }
        let lead = m.first().map_or(0, |b| 8 - b.leading_zeros());
        Ok((m.len().saturating_sub(1) * 8) as u32 + lead)
    };
    parse().map_err(|e| Error::EncodeKey(format!("RSA public key: {e}").into()))
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
        // A top byte of 0x01: one bit of it counts, not eight.
        let c = rsa_spki_der(&[0x01, 0, 0, 1], &[1, 0, 1]).unwrap();
        assert_eq!(rsa_modulus_bits(&c).unwrap(), 25);
    }
}

/// What a token keeps of a public key, by which one C_FindObjects template
/// finds its objects (PKCS #11 v2.40 sections 2.1.2 and 2.3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyValue {
    /// CKA_MODULUS: the RSA modulus, big-endian, without leading zeros.
    RsaModulus(Vec<u8>),
    /// The EC or EdDSA point (the subjectPublicKey bits); CKA_EC_POINT is
    /// its DER OCTET STRING on most tokens, the raw bytes on some.
    Point(Vec<u8>),
}

/// The [`KeyValue`] of a DER SubjectPublicKeyInfo.
///
/// # Errors
/// `Certificate.FormatError` for a key of another algorithm, or one that
/// does not decode.
pub(crate) fn key_value(spki_der: &[u8]) -> Result<KeyValue> {
    let bad = |e: &dyn std::fmt::Display| Error::CertificateFormat(format!("public key: {e}"));
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(|e| bad(&e))?;
    let bits = spki.subject_public_key.raw_bytes();
    match spki.algorithm.oid {
        RSA_ENCRYPTION => {
            let key = RsaPublicKey::from_der(bits).map_err(|e| bad(&e))?;
            Ok(KeyValue::RsaModulus(key.modulus.as_bytes().to_vec()))
        }
        ID_EC_PUBLIC_KEY | ID_ED25519 => Ok(KeyValue::Point(bits.to_vec())),
        other => Err(bad(&format_args!(
            "algorithm {other} is not RSA, EC or Ed25519"
        ))),
    }
}

/// The raw public key a verifier takes: the RSAPublicKey DER, the EC
/// point, or the Ed25519 key (the SPKI's BIT STRING contents in each case).
pub(crate) fn subject_public_key(spki_der: &[u8]) -> Result<Vec<u8>> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|e| Error::EncodeKey(format!("SubjectPublicKeyInfo: {e}").into()))?;
    Ok(spki.subject_public_key.raw_bytes().to_vec())
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

    #[test]
    fn ec_points_wrapped_or_raw() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        let a = ec_spki_der(KeyType::EcP256, &point).unwrap();
        assert_eq!(a, ec_spki_der(KeyType::EcP256, &wrapped).unwrap());
        // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }
        assert_eq!(
            a[..26],
            hex_literal::hex!("3059301306072a8648ce3d020106082a8648ce3d030107034200")
        );
        assert!(ec_spki_der(KeyType::EcP384, &point).is_err());
        let ed = ec_spki_der(KeyType::Ed25519, &[9u8; 32]).unwrap();
        assert_eq!(ed[..12], hex_literal::hex!("302a300506032b6570032100"));
        let mut ed_wrapped = vec![0x04, 32];
        ed_wrapped.extend([9u8; 32]);
        assert_eq!(ed, ec_spki_der(KeyType::Ed25519, &ed_wrapped).unwrap());
        // What a token may return instead: nothing, an empty OCTET STRING,
        // a compressed point.
        for bad in [&[][..], &[0x04, 0x00], &[0x02; 65]] {
            assert!(ec_spki_der(KeyType::EcP256, bad).is_err(), "{bad:02x?}");
        }
    }
}
