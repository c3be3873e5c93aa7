//! RFC 7512 `pkcs11:` URIs for the keys this crate makes.
//!
//! ```text
//! pk11-URI   = "pkcs11:" pk11-path [ "?" pk11-query ]
//! pk11-path  = [ pk11-pattr *(";" pk11-pattr) ]
//! pk11-id    = "id" "=" *pk11-v-pchar       ; every byte percent-encoded
//! ```
//!
//! Values are percent-encoded except for RFC 3986 unreserved characters;
//! `id` is always fully percent-encoded, as RFC 7512 section 2.3 recommends.

use std::fmt::Write;

/// The URI of a private key: `pkcs11:token=..;serial=..;object=..;id=..;type=private`.
pub fn private_key_uri(token: &str, serial: &str, object: &str, id: &[u8]) -> String {
    let mut uri = format!("pkcs11:token={}", encode(token.as_bytes(), false));
    if !serial.is_empty() {
        let _ = write!(uri, ";serial={}", encode(serial.as_bytes(), false));
    }
    let _ = write!(
        uri,
        ";object={};id={};type=private",
        encode(object.as_bytes(), false),
        encode(id, true)
    );
    uri
}

fn encode(bytes: &[u8], all: bool) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if !all && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_attribute_values() {
        assert_eq!(
            private_key_uri("My Token;1", "", "hsm-csr:*.example.com", &[0x01, 0xab]),
            "pkcs11:token=My%20Token%3b1;object=hsm-csr%3a%2a.example.com;id=%01%ab;type=private"
        );
        assert_eq!(
            private_key_uri("t", "0123abc", "k", &[0xff]),
            "pkcs11:token=t;serial=0123abc;object=k;id=%ff;type=private"
        );
    }
}
