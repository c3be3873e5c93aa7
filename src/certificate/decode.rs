//! From the bytes a caller sends to X.509 certificates.
//!
//! The cloud's SetCdnDomainCSRCertificate takes `ServerCertificate` as "a
//! PEM certificate, Base64-encoded", and the SDKs send the PEM text as it
//! is. So, in this order:
//! - text with a `-----BEGIN ` line is PEM (RFC 7468): every block must be
//!   a `CERTIFICATE` (a private key pasted along is refused, never read
//!   further), the first is the leaf and the rest its chain; explanatory
//!   text around the blocks is ignored, as RFC 7468 section 2 asks;
//! - other text made only of the base64 alphabet and whitespace is base64
//!   (RFC 4648 section 4) of a DER certificate or of the PEM text;
//! - anything else starting with a DER SEQUENCE (0x30) is DER.
//!
//! Bytes that are none of these, or whose PEM framing or base64 is broken,
//! are `Certificate.DecodeError`; what decodes but is not a certificate is
//! `Certificate.FormatError`. Error details never echo the input beyond a
//! short, printable PEM label.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use der::Decode;
use x509_cert::Certificate;

use crate::error::{Error, Result};

/// The most bytes of certificate text read: a leaf and a long chain fit in
/// a quarter of this.
pub(crate) const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The most certificates in a chain (the leaf included).
pub(crate) const MAX_CERTIFICATES: usize = 8;

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Every certificate in `bytes`, leaf first, as (DER, parsed).
///
/// # Errors
/// As the module says; `Certificate.MissingParameter` when `bytes` hold
/// only whitespace.
pub(super) fn certificates(bytes: &[u8]) -> Result<Vec<(Vec<u8>, Certificate)>> {
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(Error::CertificateFormat(format!(
            "{} bytes, over the limit of {MAX_TEXT_BYTES}",
            bytes.len()
        )));
    }
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Err(Error::CertificateMissing);
    }
    let ders = if contains(text, b"-----BEGIN ") {
        pem_blocks(text)?
    } else if text
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b) || b.is_ascii_whitespace())
    {
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let decoded = BASE64
            .decode(compact)
            .map_err(|_| Error::CertificateDecode("invalid base64".into()))?;
        // Base64 of the PEM text: one level only.
        if decoded.trim_ascii_start().starts_with(b"-----BEGIN ") {
            pem_blocks(&decoded)?
        } else {
            vec![decoded]
        }
    } else if text.first() == Some(&0x30) {
        vec![bytes.to_vec()]
    } else {
        return Err(Error::CertificateDecode(
            "neither PEM, base64 nor DER".into(),
        ));
    };
    if ders.len() > MAX_CERTIFICATES {
        return Err(Error::CertificateFormat(format!(
            "a chain of {} certificates; at most {MAX_CERTIFICATES}",
            ders.len()
        )));
    }
    ders.into_iter()
        .enumerate()
        .map(|(i, der)| {
            let cert = Certificate::from_der(&der).map_err(|e| {
                Error::CertificateFormat(format!("certificate {} is not X.509: {e}", i + 1))
            })?;
            Ok((der, cert))
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The DER of each PEM block; every one must be a `CERTIFICATE`.
fn pem_blocks(text: &[u8]) -> Result<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(text).map_err(|e| Error::CertificateDecode(pem_error(&e)))?;
    // parse_many stops, without an error, at a BEGIN line that has no END.
    let begins = text.windows(11).filter(|w| w == b"-----BEGIN ").count();
    if begins != blocks.len() || blocks.is_empty() {
        return Err(Error::CertificateDecode(
            "a BEGIN line without its END line".into(),
        ));
    }
    if begins > MAX_CERTIFICATES {
        return Err(Error::CertificateFormat(format!(
            "{begins} PEM blocks; at most {MAX_CERTIFICATES}"
        )));
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, block)| {
            if block.tag() == "CERTIFICATE" {
                Ok(block.into_contents())
            } else {
                Err(Error::CertificateFormat(format!(
                    "PEM block {} is {:?}, not CERTIFICATE",
                    i + 1,
                    printable(block.tag())
                )))
            }
        })
        .collect()
}

/// What went wrong, in words that do not repeat the input.
fn pem_error(e: &pem::PemError) -> String {
    match e {
        pem::PemError::MismatchedTags(..) => "the BEGIN and END labels differ",
        pem::PemError::InvalidData(_) => "invalid base64 inside a PEM block",
        pem::PemError::NotUtf8(_) => "a PEM block that is not UTF-8",
        pem::PemError::InvalidHeader(_) => "a malformed PEM header",
        _ => "malformed BEGIN or END line",
    }
    .to_owned()
}

/// `label` cut to 32 characters, printable ASCII only.
fn printable(label: &str) -> String {
    label
        .chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAF: &str = include_str!("../../tests/fixtures/mock-www.example.com.pem");

    fn code(bytes: &[u8]) -> &'static str {
        certificates(bytes).map_or_else(|e| e.code(), |_| "OK")
    }

    fn base64_body() -> String {
        LEAF.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    #[test]
    fn pem_base64_base64_of_pem_and_der_all_read() {
        let der = BASE64.decode(base64_body()).unwrap();
        for input in [
            LEAF.as_bytes().to_vec(),
            format!("subject=CN=www.example.com\n{LEAF}\n\n").into_bytes(),
            base64_body().into_bytes(),
            BASE64.encode(LEAF).into_bytes(),
            der.clone(),
        ] {
            let certs = certificates(&input).unwrap();
            assert_eq!(certs.len(), 1);
            assert_eq!(certs[0].0, der);
        }
        let chain = format!("{LEAF}{LEAF}{LEAF}");
        assert_eq!(certificates(chain.as_bytes()).unwrap().len(), 3);
    }

    #[test]
    fn decode_errors_and_format_errors_are_told_apart() {
        assert_eq!(code(b""), "Certificate.MissingParameter");
        assert_eq!(code(b" \n\t"), "Certificate.MissingParameter");
        assert_eq!(code(b"hello, world!"), "Certificate.DecodeError");
        assert_eq!(code(b"abcde"), "Certificate.DecodeError", "not base64");
        assert_eq!(
            code(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            "Certificate.DecodeError"
        );
        let unterminated = format!("{LEAF}-----BEGIN CERTIFICATE-----\nMIIB\n");
        assert_eq!(code(unterminated.as_bytes()), "Certificate.DecodeError");
        let mismatched = LEAF.replace("END CERTIFICATE", "END X509 CRL");
        assert_eq!(code(mismatched.as_bytes()), "Certificate.DecodeError");
        // Decodes, but is not a certificate.
        assert_eq!(code(b"aGVsbG8="), "Certificate.FormatError");
        assert_eq!(
            code(&[0x30, 0x03, 0x02, 0x01, 0x01]),
            "Certificate.FormatError"
        );
        let key = "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n";
        assert_eq!(code(key.as_bytes()), "Certificate.FormatError");
        let key_after = format!("{LEAF}{key}");
        let e = certificates(key_after.as_bytes()).unwrap_err();
        assert_eq!(e.code(), "Certificate.FormatError");
        assert!(
            e.to_string().contains("PEM block 2 is \"PRIVATE KEY\""),
            "{e}"
        );
    }

    #[test]
    fn size_and_chain_length_are_bounded() {
        let chain = LEAF.repeat(MAX_CERTIFICATES + 1);
        assert_eq!(code(chain.as_bytes()), "Certificate.FormatError");
        let big = format!("{LEAF}{}", " ".repeat(MAX_TEXT_BYTES));
        assert_eq!(code(big.as_bytes()), "Certificate.FormatError");
    }

    #[test]
    fn the_limits_are_inclusive() {
        let padded = |n: usize| format!("{LEAF}{}", " ".repeat(n - LEAF.len()));
        assert_eq!(code(padded(MAX_TEXT_BYTES).as_bytes()), "OK");
        assert_eq!(
            code(padded(MAX_TEXT_BYTES + 1).as_bytes()),
            "Certificate.FormatError"
        );
        assert_eq!(code(LEAF.repeat(MAX_CERTIFICATES).as_bytes()), "OK");
        let e = certificates(LEAF.repeat(MAX_CERTIFICATES + 1).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("9 PEM blocks; at most 8"), "{e}");
    }

    #[test]
    fn broken_pem_says_what_is_broken_without_the_input() {
        let message = |text: &str| certificates(text.as_bytes()).unwrap_err().to_string();
        let mismatched = LEAF.replace("END CERTIFICATE", "END X509 CRL");
        assert!(
            message(&mismatched).contains("the BEGIN and END labels differ"),
            "{}",
            message(&mismatched)
        );
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(
            message(bad_base64).contains("invalid base64 inside a PEM block"),
            "{}",
            message(bad_base64)
        );
        let bad_header = "-----BEGIN CERTIFICATE-----\nProc-Type: 4\nnot a header\n\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(
            message(bad_header).contains("a malformed PEM header"),
            "{}",
            message(bad_header)
        );
        let not_utf8 = b"-----BEGIN CERTIFICATE-----\nMII\xff\n-----END CERTIFICATE-----\n";
        let e = certificates(not_utf8).unwrap_err().to_string();
        assert!(e.contains("a PEM block that is not UTF-8"), "{e}");
    }

    #[test]
    fn labels_are_shown_printable_and_short() {
        let odd = format!(
            "-----BEGIN A\u{1b}[2J\nB{}-----\naGVsbG8=\n-----END A\u{1b}[2J\nB{}-----\n",
            "x".repeat(100),
            "x".repeat(100)
        );
        let e = certificates(odd.as_bytes()).unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(e.len() < 200, "{e}");
    }
}
