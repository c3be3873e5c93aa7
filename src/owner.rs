//! Who a key pair belongs to, recorded on the token so that every replica
//! and every later process sees the same answer.
//!
//! A key made by `serve` belongs to the access key that asked for it; one
//! made on the command line to the local operator ([`Owner::local`]) or to
//! `--owner NAME`. The owner is written in the keygen template (or, for a
//! pool key, in the same C_SetAttributeValue that claims it) as the
//! CKA_SUBJECT of both objects, a DER X.501 Name (PKCS #11 v2.40 section
//! 4.8: "CKA_SUBJECT: DER-encoding of the key subject name"):
//!
//! ```text
//! Name ::= SEQUENCE { -- RDNSequence
//!   SET { SEQUENCE { id-at-organizationalUnitName, UTF8String "hsm-csr key owner" } },
//!   SET { SEQUENCE { id-userId (0.9.2342.19200300.100.1.1), UTF8String owner } } }
//! ```
//!
//! Only hsm-csr writes it, with the PIN; nothing a caller sends reaches it
//! (owners are access key ids from the configuration, or an operator's
//! `--owner`). There is one encoding per owner, so the token can find an
//! owner's keys with one C_FindObjects template (quotas) and two spellings
//! can never name one owner. A CKA_SUBJECT in any other form (a key some
//! other tool made) means "no owner": only the operator's command line and
//! access keys granted `hsm-csr:AllKeys` may attach certificates to it.

use std::fmt;

use const_oid::db::rfc4519::{OU, UID};
use der::Encode;
use der::asn1::{Any, SetOfVec, Utf8StringRef};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};

use crate::error::{Error, Result};

/// The OU every owner record carries, so that a person reading the token
/// with another tool sees what the subject is.
const OWNER_OU: &str = "hsm-csr key owner";
/// Longest owner name, in bytes.
pub(crate) const MAX_OWNER_LEN: usize = 64;
/// The owner of keys made on the command line without `--owner`.
pub(crate) const LOCAL: &str = "local";

/// The owner of a key pair: an access key id, `local`, or an operator's
/// name; 1 to 64 characters from `A-Z a-z 0-9 . _ - @ :`, so that it can
/// stand in a label, a log line or a metric label as it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner(String);

impl Owner {
    /// An owner named `name`.
    ///
    /// # Errors
    /// `Config.Invalid` for an empty or longer than 64 name, or one with
    /// another character.
    pub fn new(name: &str) -> Result<Owner> {
        if is_valid(name) {
            Ok(Owner(name.to_owned()))
        } else {
            Err(Error::Config(format!(
                "owner {:?} is not valid: use 1 to {MAX_OWNER_LEN} characters from A-Z a-z 0-9 . _ - @ :",
                name.chars().take(80).collect::<String>()
            )))
        }
    }

    /// The local operator, owner of what the command line makes.
    pub fn local() -> Owner {
        Owner(LOCAL.to_owned())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The CKA_SUBJECT value recording this owner (see the module docs).
    pub fn to_subject_der(&self) -> Vec<u8> {
        // Both strings are ASCII within UTF8String's limits: encoding
        // cannot fail, and an empty Vec would record no owner at all.
        encode(&self.0).unwrap_or_default()
    }

    /// The owner a CKA_SUBJECT value records, if it is exactly the form
    /// [`Self::to_subject_der`] writes; None for anything else.
    pub fn from_subject_der(der: &[u8]) -> Option<Owner> {
        // The encoding ends with the owner's bytes, and is a fixed number
        // of bytes longer than they are (every length fits one byte): so
        // the owner is the tail that makes the whole re-encode exactly.
        let fixed = encode("x").ok()?.len() - 1;
        let n = der.len().checked_sub(fixed)?;
        let tail = der.get(der.len() - n..)?;
        let owner = Owner::new(std::str::from_utf8(tail).ok()?).ok()?;
        (owner.to_subject_der() == der).then_some(owner)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asks to use keys, and which keys it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The owner of the keys it makes.
    pub owner: Owner,
    /// Whether it may use every owner's keys: the command line (which
    /// holds the PIN anyway), and access keys granted `hsm-csr:AllKeys`.
    pub all_keys: bool,
}

impl Principal {
    /// The local operator on the command line: owns what it makes as
    /// `owner`, and may use every key.
    pub fn operator(owner: Owner) -> Principal {
        Principal {
            owner,
            all_keys: true,
        }
    }

    /// Whether it may use a key owned by `key_owner` (None: a key with no
    /// owner recorded, which only principals with `all_keys` may use).
    pub fn may_use(&self, key_owner: Option<&Owner>) -> bool {
        self.all_keys || key_owner == Some(&self.owner)
    }
}

fn is_valid(name: &str) -> bool {
    (1..=MAX_OWNER_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'))
}

fn encode(owner: &str) -> der::Result<Vec<u8>> {
    let mut rdns = RdnSequence::default();
    for (oid, value) in [(OU, OWNER_OU), (UID, owner)] {
        let mut set = SetOfVec::new();
        set.insert(AttributeTypeAndValue {
            oid,
            value: Any::encode_from(&Utf8StringRef::new(value)?)?,
        })?;
        rdns.push(RelativeDistinguishedName::from(set));
    }
    rdns.to_der()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_round_trips_through_its_subject_and_nothing_else_does() {
        let a = Owner::new("LTAI5tAccessKey.A-1@x:y_z").unwrap();
        let der = a.to_subject_der();
        assert_eq!(Owner::from_subject_der(&der), Some(a.clone()));
        // Another owner, and the certificate subject a key may carry.
        let b = Owner::new("LTAI5tAccessKey.A-2@x:y_z").unwrap();
        assert_ne!(b.to_subject_der(), der);
        assert_eq!(Owner::from_subject_der(&[]), None);
        let cn_only = crate::subject::Subject {
            country: "CN".into(),
            state: String::new(),
            city: String::new(),
            organization: String::new(),
            organization_unit: String::new(),
            common_name: a.as_str().into(),
            email: None,
        };
        let other = cn_only.to_name().unwrap().to_der().unwrap();
        assert_eq!(Owner::from_subject_der(&other), None);
    }

    #[test]
    fn a_second_spelling_of_an_owner_is_not_an_owner() {
        // The same owner as a PrintableString reads the same to a person,
        // but is not the one encoding hsm-csr writes; nor is a longer tail.
        let der = Owner::new("ak1").unwrap().to_subject_der();
        let mut printable = der.clone();
        let at = printable.len() - 5;
        assert_eq!(printable[at], 0x0c, "UTF8String tag before the owner");
        printable[at] = 0x13;
        assert_eq!(Owner::from_subject_der(&printable), None);
        let mut longer = der.clone();
        longer.push(b'x');
        assert_eq!(Owner::from_subject_der(&longer), None);
        assert_eq!(Owner::from_subject_der(&der[1..]), None);
    }

    #[test]
    fn owner_names_are_bounded_and_plain() {
        assert!(Owner::new("a").is_ok());
        assert!(Owner::new(&"a".repeat(MAX_OWNER_LEN)).is_ok());
        assert!(Owner::new(&"a".repeat(MAX_OWNER_LEN + 1)).is_err());
        for bad in ["", "a b", "a\nb", "a/b", "a\"b", "a=b", "a,b", "é", "a{b}"] {
            assert!(Owner::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Owner::local().as_str(), "local");
    }

    #[test]
    fn a_tenant_may_use_only_its_own_keys_and_the_operator_every_key() {
        let a = Owner::new("tenant-a").unwrap();
        let b = Owner::new("tenant-b").unwrap();
        let tenant = Principal {
            owner: a.clone(),
            all_keys: false,
        };
        assert!(tenant.may_use(Some(&a)));
        assert!(!tenant.may_use(Some(&b)));
        assert!(
            !tenant.may_use(None),
            "a key with no owner is not a tenant's"
        );
        let operator = Principal::operator(a);
        assert!(operator.may_use(Some(&b)) && operator.may_use(None));
    }

    #[test]
    fn an_owner_displays_as_its_name() {
        // Metrics labels and audit lines print owners with Display.
        assert_eq!(Owner::new("LTAI5t.A-1").unwrap().to_string(), "LTAI5t.A-1");
    }
}
