//! Key types, hashes and signature algorithms, and their ASN.1 identifiers.
//!
//! RFC 4055 (RSA), RFC 5758 (ECDSA), RFC 8410 (Ed25519):
//!
//! ```text
//! sha256WithRSAEncryption  ::= 1.2.840.113549.1.1.11   -- parameters NULL
//! id-RSASSA-PSS            ::= 1.2.840.113549.1.1.10   -- parameters RSASSA-PSS-params
//! RSASSA-PSS-params ::= SEQUENCE {
//!     hashAlgorithm      [0] HashAlgorithm    DEFAULT sha1Identifier,
//!     maskGenAlgorithm   [1] MaskGenAlgorithm DEFAULT mgf1SHA1Identifier,
//!     saltLength         [2] INTEGER          DEFAULT 20,
//!     trailerField       [3] INTEGER          DEFAULT 1 }
//! ecdsa-with-SHA256        ::= 1.2.840.10045.4.3.2     -- parameters absent
//! id-Ed25519               ::= 1.3.101.112             -- parameters absent
//! ```

use std::fmt;
use std::str::FromStr;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ECDSA_WITH_SHA_512, ID_MGF_1, ID_RSASSA_PSS,
    ID_SHA_256, ID_SHA_384, ID_SHA_512, SECP_256_R_1, SECP_384_R_1, SHA_256_WITH_RSA_ENCRYPTION,
    SHA_384_WITH_RSA_ENCRYPTION, SHA_512_WITH_RSA_ENCRYPTION,
};
use der::asn1::{Any, OctetString, UintRef};
use der::{Encode, Sequence};
use ring::digest;
use spki::AlgorithmIdentifierOwned;

use crate::error::{Error, Result};

/// id-Ed25519 (RFC 8410 section 3).
pub(crate) const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// RSA modulus sizes this crate makes.
pub(crate) const RSA_SIZES: [u32; 3] = [2048, 3072, 4096];

/// The kind of key pair to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA with the given modulus size and exponent 65537.
    Rsa {
        /// Modulus size in bits: 2048, 3072 or 4096.
        bits: u32,
    },
    /// ECDSA on NIST P-256 (secp256r1).
    EcP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcP384,
    /// EdDSA on edwards25519.
    Ed25519,
}

impl KeyType {
    /// The name used on the command line and in listings.
    pub fn name(self) -> String {
        match self {
            KeyType::Rsa { bits } => format!("rsa-{bits}"),
            KeyType::EcP256 => "ec-p256".into(),
            KeyType::EcP384 => "ec-p384".into(),
            KeyType::Ed25519 => "ed25519".into(),
        }
    }

    /// The named curve of an EC key.
    pub fn curve(self) -> Option<ObjectIdentifier> {
        match self {
            KeyType::EcP256 => Some(SECP_256_R_1),
            KeyType::EcP384 => Some(SECP_384_R_1),
            _ => None,
        }
    }

    /// Length of one coordinate (or of the Ed25519 key) in bytes.
    pub fn coordinate_len(self) -> usize {
        match self {
            KeyType::EcP256 | KeyType::Ed25519 => 32,
            KeyType::EcP384 => 48,
            KeyType::Rsa { bits } => bits as usize / 8,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The hash of a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl FromStr for Hash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Hash> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "sha256" => Ok(Hash::Sha256),
            "sha384" => Ok(Hash::Sha384),
            "sha512" => Ok(Hash::Sha512),
            _ => Err(Error::Config(format!(
                "unknown hash {s:?}: use sha256, sha384 or sha512."
            ))),
        }
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        })
    }
}

impl Hash {
    /// The hash's OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Hash::Sha256 => ID_SHA_256,
            Hash::Sha384 => ID_SHA_384,
            Hash::Sha512 => ID_SHA_512,
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// Hashes `data` on the host.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        };
        digest::digest(algorithm, data).as_ref().to_vec()
    }

    /// `AlgorithmIdentifier` of the hash with NULL parameters, as RSA
    /// DigestInfo and RSASSA-PSS-params carry it.
    fn identifier(self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters: Some(Any::null()),
        }
    }

    /// The DER `DigestInfo` over `data` that CKM_RSA_PKCS signs when the token
    /// cannot hash (RFC 8017 section 9.2, step 2):
    ///
    /// ```text
    /// DigestInfo ::= SEQUENCE { digestAlgorithm AlgorithmIdentifier, digest OCTET STRING }
    /// ```
    pub fn digest_info(self, data: &[u8]) -> Result<Vec<u8>> {
        #[derive(Sequence)]
        struct DigestInfo {
            algorithm: AlgorithmIdentifierOwned,
            digest: OctetString,
        }
        let info = DigestInfo {
            algorithm: self.identifier(),
            digest: OctetString::new(self.digest(data))?,
        };
        Ok(info.to_der()?)
    }
}

/// How the CertificationRequestInfo is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1(Hash),
    /// RSASSA-PSS, MGF1 with the same hash, salt length = hash length.
    RsaPss(Hash),
    /// ECDSA.
    Ecdsa(Hash),
    /// Pure Ed25519.
    Ed25519,
}

/// RSASSA-PSS-params with every field this crate sets (the trailer field
/// keeps its default and is omitted, as DER requires).
#[derive(Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    hash: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT")]
    mask_gen: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    salt_length: u32,
}

impl SignatureAlgorithm {
    /// The algorithm for `key`: `hash` defaults to SHA-256 (SHA-384 for
    /// P-384); `pss` asks for RSASSA-PSS.
    ///
    /// # Errors
    /// `Config.Invalid` for combinations that make no sense.
    pub fn for_key(key: KeyType, hash: Option<Hash>, pss: bool) -> Result<Self> {
        if pss && !matches!(key, KeyType::Rsa { .. }) {
            return Err(Error::Config(format!(
                "--pss applies to RSA keys, not {key}."
            )));
        }
        Ok(match key {
            KeyType::Rsa { .. } if pss => SignatureAlgorithm::RsaPss(hash.unwrap_or(Hash::Sha256)),
            KeyType::Rsa { .. } => SignatureAlgorithm::RsaPkcs1(hash.unwrap_or(Hash::Sha256)),
            KeyType::EcP256 | KeyType::EcP384 => {
                let default = if key == KeyType::EcP384 {
                    Hash::Sha384
                } else {
                    Hash::Sha256
                };
                match hash.unwrap_or(default) {
                    // The host-side verifier (ring) has no ECDSA with SHA-512.
                    Hash::Sha512 => {
                        return Err(Error::Config(format!(
                            "{key} signs with sha256 or sha384, not sha512."
                        )));
                    }
                    h => SignatureAlgorithm::Ecdsa(h),
                }
            }
            KeyType::Ed25519 => match hash {
                None => SignatureAlgorithm::Ed25519,
                Some(h) => {
                    return Err(Error::Config(format!(
                        "ed25519 has its hash built in; drop --hash {h}."
                    )));
                }
            },
        })
    }

    /// The hash, if the algorithm takes one.
    pub fn hash(self) -> Option<Hash> {
        match self {
            SignatureAlgorithm::RsaPkcs1(h)
            | SignatureAlgorithm::RsaPss(h)
            | SignatureAlgorithm::Ecdsa(h) => Some(h),
            SignatureAlgorithm::Ed25519 => None,
        }
    }

    /// The `signatureAlgorithm` AlgorithmIdentifier of the CSR.
    pub fn identifier(self) -> Result<AlgorithmIdentifierOwned> {
        let plain = |oid| AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        };
        Ok(match self {
            SignatureAlgorithm::RsaPkcs1(h) => AlgorithmIdentifierOwned {
                oid: match h {
                    Hash::Sha256 => SHA_256_WITH_RSA_ENCRYPTION,
                    Hash::Sha384 => SHA_384_WITH_RSA_ENCRYPTION,
                    Hash::Sha512 => SHA_512_WITH_RSA_ENCRYPTION,
                },
                parameters: Some(Any::null()),
            },
            SignatureAlgorithm::RsaPss(h) => {
                let params = PssParams {
                    hash: h.identifier(),
                    mask_gen: AlgorithmIdentifierOwned {
                        oid: ID_MGF_1,
                        parameters: Some(Any::encode_from(&h.identifier())?),
                    },
                    salt_length: h.output_len() as u32,
                };
                AlgorithmIdentifierOwned {
                    oid: ID_RSASSA_PSS,
                    parameters: Some(Any::encode_from(&params)?),
                }
            }
            SignatureAlgorithm::Ecdsa(h) => plain(match h {
                Hash::Sha256 => ECDSA_WITH_SHA_256,
                Hash::Sha384 => ECDSA_WITH_SHA_384,
                Hash::Sha512 => ECDSA_WITH_SHA_512,
            }),
            SignatureAlgorithm::Ed25519 => plain(ID_ED25519),
        })
    }

    /// Turns what the token returned into the CSR's signature bytes: PKCS#11
    /// gives ECDSA signatures as raw `r || s`, X.509 wants
    /// `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 5480).
    pub fn encode_signature(self, raw: &[u8]) -> Result<Vec<u8>> {
        if !matches!(self, SignatureAlgorithm::Ecdsa(_)) {
            return Ok(raw.to_vec());
        }
        #[derive(Sequence)]
        struct EcdsaSigValue<'a> {
            r: UintRef<'a>,
            s: UintRef<'a>,
        }
        if raw.is_empty() || raw.len() % 2 != 0 {
            return Err(Error::CreateCsr(
                format!(
                    "the token returned a {}-byte ECDSA signature; expected r || s",
                    raw.len()
                )
                .into(),
            ));
        }
        let (r, s) = raw.split_at(raw.len() / 2);
        Ok(EcdsaSigValue {
            r: UintRef::new(r)?,
            s: UintRef::new(s)?,
        }
        .to_der()?)
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureAlgorithm::RsaPkcs1(h) => write!(f, "RSA PKCS#1 v1.5 with {h}"),
            SignatureAlgorithm::RsaPss(h) => write!(f, "RSASSA-PSS with {h}"),
            SignatureAlgorithm::Ecdsa(h) => write!(f, "ECDSA with {h}"),
            SignatureAlgorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;

    use super::*;

    /// RFC 8017 section 9.2, note 1: the DER prefixes of DigestInfo.
    #[test]
    fn digest_info_matches_rfc8017() {
        for (h, prefix) in [
            (Hash::Sha256, hex!("3031300d060960864801650304020105000420")),
            (Hash::Sha384, hex!("3041300d060960864801650304020205000430")),
            (Hash::Sha512, hex!("3051300d060960864801650304020305000440")),
        ] {
            let di = h.digest_info(b"abc").unwrap();
            assert_eq!(di[..19], prefix, "{h}");
            assert_eq!(&di[19..], h.digest(b"abc").as_slice());
        }
    }

    #[test]
    fn pss_identifier_carries_full_params() {
        let der = SignatureAlgorithm::RsaPss(Hash::Sha256)
            .identifier()
            .unwrap()
            .to_der()
            .unwrap();
        // SEQUENCE { id-RSASSA-PSS, SEQUENCE { [0] sha256+NULL, [1] mgf1(sha256+NULL), [2] 32 } },
        // the encoding OpenSSL and RustCrypto's rsa crate produce.
        assert_eq!(
            der,
            hex!(
                "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d"
                "010108300d06096086480165030402010500a203020120"
            )
        );
    }

    #[test]
    fn ecdsa_raw_signature_becomes_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a 0x00 pad
        raw[63] = 1; // s is 1
        let der = SignatureAlgorithm::Ecdsa(Hash::Sha256)
            .encode_signature(&raw)
            .unwrap();
        assert_eq!(der[..4], [0x30, 0x26, 0x02, 0x21]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        assert!(
            SignatureAlgorithm::Ecdsa(Hash::Sha256)
                .encode_signature(&[1, 2, 3])
                .is_err()
        );
    }

    #[test]
    fn defaults_and_refusals() {
        let rsa = KeyType::Rsa { bits: 2048 };
        assert_eq!(
            SignatureAlgorithm::for_key(rsa, None, false).unwrap(),
            SignatureAlgorithm::RsaPkcs1(Hash::Sha256)
        );
        assert_eq!(
            SignatureAlgorithm::for_key(rsa, Some(Hash::Sha512), true).unwrap(),
            SignatureAlgorithm::RsaPss(Hash::Sha512)
        );
        assert_eq!(
            SignatureAlgorithm::for_key(KeyType::EcP384, None, false).unwrap(),
            SignatureAlgorithm::Ecdsa(Hash::Sha384)
        );
        assert!(SignatureAlgorithm::for_key(KeyType::EcP256, None, true).is_err());
        assert!(SignatureAlgorithm::for_key(KeyType::EcP256, Some(Hash::Sha512), false).is_err());
        assert!(SignatureAlgorithm::for_key(KeyType::Ed25519, Some(Hash::Sha256), false).is_err());
        assert_eq!("SHA-384".parse::<Hash>().unwrap(), Hash::Sha384);
    }
}
