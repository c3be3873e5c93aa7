//! Whether a certificate is worth keeping beside its key: space on a token
//! is scarce and shared, so only a certificate a TLS server could use now
//! is stored.
//!
//! - valid now (RFC 5280 section 4.1.2.5), within [`CLOCK_SKEW_S`];
//! - not a CA's: basicConstraints cA FALSE or absent (section 4.2.1.9);
//! - for TLS servers where it says: keyUsage, when present, has
//!   digitalSignature, keyEncipherment or keyAgreement (section 4.2.1.3);
//!   extendedKeyUsage, when present, has id-kp-serverAuth or
//!   anyExtendedKeyUsage (section 4.2.1.12);
//! - when a chain follows the leaf, each certificate's signature verifies
//!   with the next one's public key (section 6.1.3 (a)(1), signatures only:
//!   which root to trust is the relying party's business).

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280::{ANY_EXTENDED_KEY_USAGE, ID_KP_SERVER_AUTH};
use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ID_RSASSA_PSS, SECP_256_R_1, SECP_384_R_1,
    SHA_256_WITH_RSA_ENCRYPTION, SHA_384_WITH_RSA_ENCRYPTION, SHA_512_WITH_RSA_ENCRYPTION,
};
use der::Encode;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};

use super::ParsedCertificate;
use crate::algorithm::ID_ED25519;
use crate::error::{Error, Result};

/// Allowed difference between this host's clock and the CA's, in seconds.
pub(super) const CLOCK_SKEW_S: u64 = 300;

impl ParsedCertificate {
    /// Fails unless the certificate may be stored (see the module docs);
    /// `now` in seconds since the Unix epoch.
    ///
    /// # Errors
    /// `Certificate.NotYetValid`, `Certificate.Expired`, `Certificate.IsCA`,
    /// `Certificate.UsageMismatch`, `Certificate.ChainInvalid`, or
    /// `Certificate.FormatError` for an extension that does not decode or
    /// is given twice.
    pub fn check_storable(&self, now: u64) -> Result<()> {
        let tbs = self.cert.tbs_certificate();
        let validity = tbs.validity();
        if now.saturating_add(CLOCK_SKEW_S) < validity.not_before.to_unix_duration().as_secs() {
            return Err(Error::CertificateNotYetValid {
                not_before: validity.not_before.to_date_time().to_string(),
            });
        }
        if now
            > validity
                .not_after
                .to_unix_duration()
                .as_secs()
                .saturating_add(CLOCK_SKEW_S)
        {
            return Err(Error::CertificateExpired {
                not_after: validity.not_after.to_date_time().to_string(),
            });
        }
        let bad = |what: &str, e: der::Error| Error::CertificateFormat(format!("{what}: {e}"));
        let constraints = tbs
            .get_extension::<BasicConstraints>()
            .map_err(|e| bad("basicConstraints", e))?;
        if constraints.is_some_and(|(_, bc)| bc.ca) {
            return Err(Error::CertificateIsCa);
        }
        let usage = tbs
            .get_extension::<KeyUsage>()
            .map_err(|e| bad("keyUsage", e))?;
        if let Some((_, ku)) = usage {
            let tls =
                KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment | KeyUsages::KeyAgreement;
            if (ku.0 & tls).is_empty() {
                return Err(Error::CertificateUsage(
                    "its keyUsage has none of digitalSignature, keyEncipherment, keyAgreement"
                        .into(),
                ));
            }
        }
        let extended = tbs
            .get_extension::<ExtendedKeyUsage>()
            .map_err(|e| bad("extendedKeyUsage", e))?;
        if let Some((_, eku)) = extended {
            if !eku
                .0
                .iter()
                .any(|p| *p == ID_KP_SERVER_AUTH || *p == ANY_EXTENDED_KEY_USAGE)
            {
                return Err(Error::CertificateUsage(
                    "its extendedKeyUsage does not include serverAuth".into(),
                ));
            }
        }
        // Stored, the certificate's subject becomes its CKA_SUBJECT: never
        // one that reads as a key owner's record (crate::owner).
        if crate::owner::Owner::from_subject_der(&tbs.subject().to_der()?).is_some() {
            return Err(Error::CertificateFormat(
                "its subject is in the form hsm-csr keeps for key owners".into(),
            ));
        }
        self.check_chain()
    }

    /// Each certificate is signed by the next one's key.
    fn check_chain(&self) -> Result<()> {
        let mut child = &self.cert;
        for (at, issuer) in self.chain.iter().enumerate() {
            signed_by(child, issuer).map_err(|why| {
                Error::CertificateChain(format!(
                    "certificate {} is not signed by certificate {}: {why}",
                    at + 1,
                    at + 2
                ))
            })?;
            child = issuer;
        }
        Ok(())
    }
}

/// Whether `child`'s signature verifies with `issuer`'s public key.
fn signed_by(child: &Certificate, issuer: &Certificate) -> std::result::Result<(), String> {
    let tbs = child
        .tbs_certificate()
        .to_der()
        .map_err(|e| e.to_string())?;
    let sig = child
        .signature()
        .as_bytes()
        .ok_or("the signature is not a whole number of bytes")?;
    let key = issuer.tbs_certificate().subject_public_key_info();
    let curve = key
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let alg = child.signature_algorithm().oid;
    let verifiers: Vec<&'static dyn VerificationAlgorithm> = match alg {
        SHA_256_WITH_RSA_ENCRYPTION => vec![&signature::RSA_PKCS1_2048_8192_SHA256],
        SHA_384_WITH_RSA_ENCRYPTION => vec![&signature::RSA_PKCS1_2048_8192_SHA384],
        SHA_512_WITH_RSA_ENCRYPTION => vec![&signature::RSA_PKCS1_2048_8192_SHA512],
        // The hash is in the parameters; a signature verifies under at
        // most one of them.
        ID_RSASSA_PSS => vec![
            &signature::RSA_PSS_2048_8192_SHA256,
            &signature::RSA_PSS_2048_8192_SHA384,
            &signature::RSA_PSS_2048_8192_SHA512,
        ],
        ECDSA_WITH_SHA_256 if curve == Some(SECP_256_R_1) => {
            vec![&signature::ECDSA_P256_SHA256_ASN1]
        }
        ECDSA_WITH_SHA_256 if curve == Some(SECP_384_R_1) => {
            vec![&signature::ECDSA_P384_SHA256_ASN1]
        }
        ECDSA_WITH_SHA_384 if curve == Some(SECP_256_R_1) => {
            vec![&signature::ECDSA_P256_SHA384_ASN1]
        }
        ECDSA_WITH_SHA_384 if curve == Some(SECP_384_R_1) => {
            vec![&signature::ECDSA_P384_SHA384_ASN1]
        }
        ID_ED25519 => vec![&signature::ED25519],
        other => {
            return Err(format!(
                "signature algorithm {other} with this issuer key is not supported"
            ));
        }
    };
    let bits = key.subject_public_key.raw_bytes();
    if verifiers
        .iter()
        .any(|v| UnparsedPublicKey::new(*v, bits).verify(&tbs, sig).is_ok())
    {
        Ok(())
    } else {
        Err("the signature does not verify".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(name: &str) -> ParsedCertificate {
        let path = format!(
            "{}/tests/fixtures/mock-certs/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        ParsedCertificate::parse(&std::fs::read(path).unwrap()).unwrap()
    }

    /// 2026-06-01, inside every fixture's validity but the two dated ones.
    const NOW: u64 = 1_780_272_000;

    #[test]
    fn each_refusal_has_its_code() {
        for (file, code) in [
            ("expired.pem", "Certificate.Expired"),
            ("not-yet-valid.pem", "Certificate.NotYetValid"),
            ("ca.pem", "Certificate.IsCA"),
            ("client-only.pem", "Certificate.UsageMismatch"),
            ("bad-chain.pem", "Certificate.ChainInvalid"),
            ("owner-subject.pem", "Certificate.FormatError"),
        ] {
            let e = parsed(file).check_storable(NOW).unwrap_err();
            assert_eq!(e.code(), code, "{file}: {e}");
            assert_eq!(e.class(), crate::ErrorClass::Request, "{file}");
        }
        parsed("good-chain.pem").check_storable(NOW).unwrap();
        parsed("day-0.pem").check_storable(NOW).unwrap();
        parsed("../mock-www.example.com.pem")
            .check_storable(NOW)
            .unwrap();
    }

    #[test]
    fn the_validity_edges_allow_the_clock_skew_and_no_more() {
        let c = parsed("day-0.pem");
        let not_before = c
            .cert
            .tbs_certificate()
            .validity()
            .not_before
            .to_unix_duration()
            .as_secs();
        c.check_storable(not_before - CLOCK_SKEW_S).unwrap();
        let e = c.check_storable(not_before - CLOCK_SKEW_S - 1).unwrap_err();
        assert_eq!(e.code(), "Certificate.NotYetValid");
        let expired = parsed("expired.pem");
        let not_after = expired
            .cert
            .tbs_certificate()
            .validity()
            .not_after
            .to_unix_duration()
            .as_secs();
        expired.check_storable(not_after + CLOCK_SKEW_S).unwrap();
        let e = expired
            .check_storable(not_after + CLOCK_SKEW_S + 1)
            .unwrap_err();
        assert_eq!(e.code(), "Certificate.Expired");
        assert!(e.to_string().contains("2021-01-01T00:00:00Z"), "{e}");
    }

    #[test]
    fn a_chain_verifies_link_by_link() {
        let good = parsed("good-chain.pem");
        assert_eq!(good.chain.len(), 1);
        // The leaf signed by a CA, followed by another CA's certificate.
        let e = parsed("bad-chain.pem").check_storable(NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("certificate 1 is not signed by certificate 2"),
            "{e}"
        );
        // A leaf alone (self-signed or not) has no chain to check.
        let mut leaf_only = good.clone();
        leaf_only.chain.clear();
        leaf_only.check_storable(NOW).unwrap();
        // A chain in the wrong order does not verify either.
        let mut reversed = good.clone();
        reversed.chain.push(good.cert.clone());
        let e = reversed.check_storable(NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("certificate 2 is not signed by certificate 3"),
            "{e}"
        );
    }

    #[test]
    fn a_chain_verifies_under_each_curve_and_hash() {
        for file in [
            "chain-p256-sha256.pem",
            "chain-p256-sha384.pem",
            "chain-p384-sha256.pem",
            "chain-p384-sha384.pem",
        ] {
            let c = parsed(file);
            assert_eq!(c.chain.len(), 1, "{file}");
            c.check_storable(NOW)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        for file in ["chain-p521-sha256.pem", "chain-p521-sha384.pem"] {
            let e = parsed(file).check_storable(NOW).unwrap_err();
            assert_eq!(e.code(), "Certificate.ChainInvalid", "{file}: {e}");
            assert!(e.to_string().contains("is not supported"), "{file}: {e}");
        }
    }

    #[test]
    fn one_tls_key_usage_is_enough_and_key_cert_sign_is_none() {
        for file in [
            "ku-digital-signature.pem",
            "ku-key-encipherment.pem",
            "ku-key-agreement.pem",
        ] {
            parsed(file)
                .check_storable(NOW)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let e = parsed("ku-key-cert-sign.pem")
            .check_storable(NOW)
            .unwrap_err();
        assert_eq!(e.code(), "Certificate.UsageMismatch", "{e}");
    }
}
