//! Certificates coming back from a CA: parsing (PEM or DER), the PubMd5 of
//! their public key, and whether they cover a domain.
//!
//! RFC 5280 section 4.1 and 4.2.1.6; wildcard matching as RFC 6125 section
//! 6.4.3 allows it: `*` is the whole left-most label and matches exactly one
//! label.

use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::error::{Error, Result};
use crate::fingerprint;

/// A parsed certificate and its DER.
#[derive(Clone, Debug)]
pub struct ParsedCertificate {
    /// The certificate's DER.
    pub der: Vec<u8>,
    /// The decoded certificate.
    pub cert: Certificate,
}

impl ParsedCertificate {
    /// Parses a PEM (`CERTIFICATE`) or DER certificate.
    ///
    /// # Errors
    /// `Certificate.FormatError` for anything else.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let der = if bytes.starts_with(b"-----BEGIN") || bytes.iter().take(64).all(u8::is_ascii) {
            let pem =
                pem::parse(bytes).map_err(|e| Error::CertificateFormat(format!("PEM: {e}")))?;
            if pem.tag() != "CERTIFICATE" {
                return Err(Error::CertificateFormat(format!(
                    "PEM block is {:?}, not CERTIFICATE",
                    pem.tag()
                )));
            }
            pem.into_contents()
        } else {
            bytes.to_vec()
        };
        let cert =
            Certificate::from_der(&der).map_err(|e| Error::CertificateFormat(e.to_string()))?;
        Ok(ParsedCertificate { der, cert })
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
    pub fn pub_md5(&self) -> Result<String> {
        let spki = self
            .cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()?;
        Ok(fingerprint::pub_md5(&spki))
    }

    /// The DNS names the certificate is for: its subjectAltName dNSNames, or
    /// its common name when it has none.
    pub fn dns_names(&self) -> Vec<String> {
        let tbs = self.cert.tbs_certificate();
        let from_san: Vec<String> = tbs
            .get_extension::<SubjectAltName>()
            .ok()
            .flatten()
            .map(|(_, san)| {
                san.0
                    .into_iter()
                    .filter_map(|n| match n {
                        GeneralName::DnsName(d) => Some(d.to_string().to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !from_san.is_empty() {
            return from_san;
        }
        tbs.subject()
            .common_name()
            .ok()
            .flatten()
            .map(|cn| vec![cn.value().to_ascii_lowercase()])
            .unwrap_or_default()
    }

    /// Fails with `Certificate.MissMatch` unless the certificate covers `domain`.
    ///
    /// # Errors
    /// As above.
    pub fn check_domain(&self, domain: &str) -> Result<()> {
        let want =
            crate::san::dns_name(domain.trim()).unwrap_or_else(|| domain.to_ascii_lowercase());
        let names = self.dns_names();
        if names.iter().any(|n| covers(n, &want)) {
            Ok(())
        } else {
            Err(Error::CertificateMismatch {
                domain: domain.to_owned(),
                covers: if names.is_empty() {
                    "no DNS names".into()
                } else {
                    names.join(", ")
                },
            })
        }
    }
}

/// Whether certificate name `pattern` covers `domain` (both lowercase A-labels).
fn covers(pattern: &str, domain: &str) -> bool {
    if pattern == domain {
        return true;
    }
    match (pattern.strip_prefix("*."), domain.split_once('.')) {
        (Some(suffix), Some((first, rest))) => !first.is_empty() && rest == suffix,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn wildcards_match_exactly_one_label() {
        assert!(covers("example.com", "example.com"));
        assert!(covers("*.example.com", "www.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("www.example.com", "example.com"));
    }
}
