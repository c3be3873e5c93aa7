//! Certificates coming back from a CA: how they are read (`decode`), the
//! PubMd5 of their public key, and whether they cover a domain
//! (`names`).
//!
//! RFC 5280 section 4.1 (the certificate) and 4.2.1.6 (subjectAltName).

mod checks;
mod decode;
mod names;

use der::Encode;
use x509_cert::Certificate;

use crate::error::Result;
use crate::fingerprint;

#[cfg(feature = "cli")]
pub(crate) use decode::MAX_TEXT_BYTES;

/// A parsed certificate and its DER.
#[derive(Clone, Debug)]
pub struct ParsedCertificate {
    /// The certificate's DER.
    pub der: Vec<u8>,
    /// The decoded certificate.
    pub cert: Certificate,
    /// How many certificates followed it (a chain's intermediates): each
    /// was checked to be a certificate, none is stored.
    pub chain_after: usize,
    /// Those certificates, in the order given: each must sign the one
    /// before it ([`Self::check_storable`]).
    pub chain: Vec<Certificate>,
}

impl ParsedCertificate {
    /// Reads a certificate as a CA or a caller hands it over: PEM (a chain
    /// too: the first certificate is the leaf), base64 DER, base64 of
    /// PEM, or DER (the `decode` module has the rules).
    ///
    /// # Errors
    /// `Certificate.MissingParameter` for empty input,
    /// `Certificate.DecodeError` when the bytes are not PEM, base64 or
    /// DER, `Certificate.FormatError` when what they hold is not X.509
    /// certificates (or is too big).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut certs = decode::certificates(bytes)?.into_iter();
        let (der, cert) = certs
            .next()
            .ok_or_else(|| crate::Error::CertificateDecode("no certificate found".into()))?;
        let chain: Vec<Certificate> = certs.map(|(_, c)| c).collect();
        Ok(ParsedCertificate {
            der,
            cert,
            chain_after: chain.len(),
            chain,
        })
    }

    /// The certificate's DER SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// `Internal.EncodeCSRError` if it cannot be re-encoded.
    pub fn spki_der(&self) -> Result<Vec<u8>> {
        Ok(self
            .cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()?)
    }

    /// PubMd5 of the certificate's SubjectPublicKeyInfo: the value the key
    /// it was issued for has.
    ///
    /// # Errors
    /// As [`Self::spki_der`].
    pub fn pub_md5(&self) -> Result<String> {
        Ok(fingerprint::pub_md5(&self.spki_der()?))
    }

    /// The start of its validity (RFC 5280 section 4.1.2.5, notBefore), in
    /// seconds since the Unix epoch.
    pub fn not_before_unix(&self) -> u64 {
        self.cert
            .tbs_certificate()
            .validity()
            .not_before
            .to_unix_duration()
            .as_secs()
    }

    /// The end of its validity (RFC 5280 section 4.1.2.5, notAfter), in
    /// seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> u64 {
        self.cert
            .tbs_certificate()
            .validity()
            .not_after
            .to_unix_duration()
            .as_secs()
    }
}
