//! The certificate subject, built from typed fields (never parsed from an
//! RFC 4514 string, whose RDN order is the reverse of the encoding).
//!
//! RFC 5280 section 4.1.2.4 and appendix A.1:
//!
//! ```text
//! Name ::= CHOICE { rdnSequence  RDNSequence }
//! RDNSequence ::= SEQUENCE OF RelativeDistinguishedName
//! RelativeDistinguishedName ::= SET SIZE (1..MAX) OF AttributeTypeAndValue
//!
//! X520countryName ::=     PrintableString (SIZE (2))
//! X520name        ::= DirectoryString { ub-name }   -- etc.
//! DirectoryString ::= CHOICE { printableString PrintableString, utf8String UTF8String, ... }
//! EmailAddress ::=     IA5String (SIZE (1..ub-emailaddress-length))
//! ```
//!
//! One attribute per RDN, in the order C, ST, L, O, OU, CN, emailAddress
//! (the order of the cloud API's sample CSR). countryName is always a
//! PrintableString; the other DirectoryStrings are PrintableString when every
//! character is in its repertoire and UTF8String otherwise; emailAddress is
//! an IA5String.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc2985::PKCS_9_AT_EMAIL_ADDRESS;
use const_oid::db::rfc4519::{COMMON_NAME, COUNTRY_NAME, L, O, OU, ST};
use der::asn1::{Any, Ia5StringRef, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

use crate::error::Result;

/// The commonName's upper bound from RFC 5280 appendix A.1
/// (`ub-common-name`), counted in characters.
pub(crate) const UB_COMMON_NAME: usize = 64;

/// Validated subject fields. Build one with [`crate::CsrRequest::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// countryName, two uppercase letters.
    pub country: String,
    /// stateOrProvinceName.
    pub state: String,
    /// localityName.
    pub city: String,
    /// organizationName.
    pub organization: String,
    /// organizationalUnitName.
    pub organization_unit: String,
    /// commonName.
    pub common_name: String,
    /// PKCS#9 emailAddress, if given.
    pub email: Option<String>,
}

/// How one attribute value is encoded.
#[derive(Clone, Copy)]
enum StringKind {
    Printable,
    Directory,
    Ia5,
}

impl Subject {
    /// The subject as the DER `Name` that goes into the CSR.
    pub fn to_name(&self) -> Result<Name> {
        let mut fields: Vec<(ObjectIdentifier, &str, StringKind)> = vec![
            (COUNTRY_NAME, &self.country, StringKind::Printable),
            (ST, &self.state, StringKind::Directory),
            (L, &self.city, StringKind::Directory),
            (O, &self.organization, StringKind::Directory),
            (OU, &self.organization_unit, StringKind::Directory),
            (COMMON_NAME, &self.common_name, StringKind::Directory),
        ];
        if let Some(email) = &self.email {
            fields.push((PKCS_9_AT_EMAIL_ADDRESS, email, StringKind::Ia5));
        }
        let mut rdns = RdnSequence::default();
        for (oid, value, kind) in fields {
            let value = match kind {
                StringKind::Printable => Any::encode_from(&PrintableStringRef::new(value)?)?,
                StringKind::Directory if is_printable(value) => {
                    Any::encode_from(&PrintableStringRef::new(value)?)?
                }
                StringKind::Directory => Any::encode_from(&Utf8StringRef::new(value)?)?,
                StringKind::Ia5 => Any::encode_from(&Ia5StringRef::new(value)?)?,
            };
            let mut set = SetOfVec::new();
            set.insert(AttributeTypeAndValue { oid, value })?;
            rdns.push(RelativeDistinguishedName::from(set));
        }
        // x509-cert only builds a `Name` by parsing; round-trip through DER
        // (microseconds) instead of reaching for its `hazmat` constructor.
        Ok(Name::from_der(&rdns.to_der()?)?)
    }
}

/// X.680 PrintableString repertoire: `A-Z a-z 0-9 space ' ( ) + , - . / : = ?`.
pub(crate) fn is_printable(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Tag, Tagged};

    fn subject() -> Subject {
        Subject {
            country: "CN".into(),
            state: "Zhejiang".into(),
            city: "Hangzhou".into(),
            organization: "Alibaba Inc".into(),
            organization_unit: "Aliyun CDN".into(),
            common_name: "*.example.com".into(),
            email: Some("ops@example.com".into()),
        }
    }

    #[test]
    fn order_oids_and_tags() {
        let name = subject().to_name().unwrap();
        let got: Vec<(String, Tag, Vec<u8>)> = name
            .iter_rdn()
            .map(|rdn| {
                assert_eq!(rdn.len(), 1, "one attribute per RDN");
                let atv = rdn.iter().next().unwrap();
                (
                    atv.oid.to_string(),
                    atv.value.tag(),
                    atv.value.value().to_vec(),
                )
            })
            .collect();
        let want = [
            ("2.5.4.6", Tag::PrintableString, "CN"),
            ("2.5.4.8", Tag::PrintableString, "Zhejiang"),
            ("2.5.4.7", Tag::PrintableString, "Hangzhou"),
            ("2.5.4.10", Tag::PrintableString, "Alibaba Inc"),
            ("2.5.4.11", Tag::PrintableString, "Aliyun CDN"),
            // '*' is outside the PrintableString repertoire.
            ("2.5.4.3", Tag::Utf8String, "*.example.com"),
            ("1.2.840.113549.1.9.1", Tag::Ia5String, "ops@example.com"),
        ];
        assert_eq!(got.len(), want.len());
        for ((oid, tag, value), (woid, wtag, wvalue)) in got.iter().zip(want) {
            assert_eq!(
                (oid.as_str(), *tag, value.as_slice()),
                (woid, wtag, wvalue.as_bytes())
            );
        }
    }

    #[test]
    fn known_answer_der() {
        let mut s = subject();
        s.common_name = "example.com".into();
        s.email = None;
        let der = s.to_name().unwrap().to_der().unwrap();
        // The subject `openssl req -subj '/C=CN/ST=Zhejiang/L=Hangzhou/O=Alibaba Inc/OU=Aliyun CDN/CN=example.com'`
        // writes with `string_mask = default` in its config.
        let want = hex_literal::hex!(
            "3074310b300906035504061302434e3111300f060355040813085a68656a69616e673111300f06"
            "03550407130848616e677a686f7531143012060355040a130b416c696261626120496e633113"
            "3011060355040b130a416c6979756e2043444e311430120603550403130b6578616d706c652e"
            "636f6d"
        );
        assert_eq!(der, want);
    }

    #[test]
    fn non_printable_values_become_utf8() {
        let mut s = subject();
        s.city = "杭州".into();
        s.organization = "O'Brien & Co".into();
        let name = s.to_name().unwrap();
        let tags: Vec<Tag> = name.iter().map(|atv| atv.value.tag()).collect();
        assert_eq!(tags[2], Tag::Utf8String);
        assert_eq!(tags[3], Tag::Utf8String, "'&' is not PrintableString");
        assert_eq!(tags[0], Tag::PrintableString);
    }
}
