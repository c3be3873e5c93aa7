//! `PubMd5`: the API's "MD5 value of the certificate public key".
//!
//! The API does not say which bytes it hashes. This crate defines it as the
//! lowercase hex MD5 of the DER `SubjectPublicKeyInfo` (RFC 5280 section
//! 4.1.2.7) of the generated key: the bytes of
//! `openssl req -in csr.pem -pubkey -noout | openssl pkey -pubin -outform DER`,
//! and of Go's `x509.MarshalPKIXPublicKey`. The same bytes sit in the CSR and
//! in the certificate a CA issues for it, so a certificate can be matched to
//! its key by this value.

use md5::{Digest, Md5};

/// Lowercase hex MD5 of a DER SubjectPublicKeyInfo.
pub fn pub_md5(spki_der: &[u8]) -> String {
    hex(&Md5::digest(spki_der))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Lowercase hex of the first 16 bytes of a SHA-256 `digest`: the digest
/// part of a file name (the acme lock, the in-flight note).
#[cfg(feature = "cli")]
pub(crate) fn hex_128(digest: &ring::digest::Digest) -> String {
    let bytes = digest.as_ref();
    // SHA-256 gives 32 bytes: the whole digest is never what is written.
    hex(bytes.get(..16).unwrap_or(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SPKI of the RSA-2048 key in `tests/fixtures/rsa2048-spki.der`;
    /// the expected value was computed with `openssl md5` over that file.
    #[test]
    fn known_answer() {
        let spki = include_bytes!("../tests/fixtures/rsa2048-spki.der");
        let want = include_str!("../tests/fixtures/rsa2048-spki.pubmd5").trim();
        assert_eq!(pub_md5(spki), want);
    }

    #[test]
    fn rfc1321_vector() {
        assert_eq!(pub_md5(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
