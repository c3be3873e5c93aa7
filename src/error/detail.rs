//! [`Detail`]: what a failed call said, keeping the PKCS#11 function and
//! return value (PKCS#11 v2.40 section 5.1, `CK_RV`) beside the text, so
//! that code decides on the value and never on text a caller may have
//! written.

use std::fmt;

use cryptoki::context::Function;
use cryptoki::error::{Error as Pkcs11Error, RvError};

/// What a failed call said: text for people, and the PKCS#11 function and
/// return value when a token call failed, for code to decide on
/// ([`Error::session_lost`](super::Error::session_lost)) without reading the text.
#[derive(Clone, Debug)]
pub struct Detail {
    text: String,
    pkcs11: Option<(Function, RvError)>,
}

impl Detail {
    /// A token call's failure, in the spec's own words:
    /// `C_Sign: CKR_KEY_TYPE_INCONSISTENT`.
    pub fn pkcs11(e: &Pkcs11Error) -> Self {
        match e {
            Pkcs11Error::Pkcs11(rv, function) => Detail {
                text: format!("C_{function:?}: {}", screaming("CKR", &format!("{rv:?}"))),
                pkcs11: Some((*function, *rv)),
            },
            other => other.to_string().into(),
        }
    }

    /// The same failure, with what was being done in front: `what: detail`.
    #[must_use]
    pub fn context(self, what: impl fmt::Display) -> Self {
        Detail {
            text: format!("{what}: {}", self.text),
            pkcs11: self.pkcs11,
        }
    }

    /// The PKCS#11 return value, when a token call failed.
    pub fn return_value(&self) -> Option<RvError> {
        self.pkcs11.map(|(_, rv)| rv)
    }

    /// The PKCS#11 function that failed, when a token call failed.
    pub fn function(&self) -> Option<Function> {
        self.pkcs11.map(|(f, _)| f)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<String> for Detail {
    fn from(text: String) -> Self {
        Detail { text, pkcs11: None }
    }
}

impl From<&str> for Detail {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

/// `PinIncorrect` -> `CKR_PIN_INCORRECT`.
fn screaming(prefix: &str, camel: &str) -> String {
    let mut out = String::from(prefix);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
