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
//!
//! [`parse`] reads the URIs operators give to `--token` and to the `keys`
//! commands: path attributes `token`, `serial`, `slot-id`, `manufacturer`,
//! `model`, `object`, `id`, `type`, and query attributes `module-path`,
//! `pin-source` (`file:PATH`, a plain path, or `env:VAR`) and `pin-value`.

use std::fmt::Write;
use std::path::PathBuf;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::token_selection::TokenSelector;
use crate::error::{Error, Result};

/// The URI of a private key: `pkcs11:token=..;serial=..;object=..;id=..;type=private`.
pub(crate) fn private_key_uri(token: &str, serial: &str, object: &str, id: &[u8]) -> String {
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

/// A parsed `pkcs11:` URI.
#[cfg_attr(
    not(feature = "cli"),
    allow(dead_code, reason = "only the command line reads pkcs11: URIs")
)]
#[derive(Debug, Default)]
pub(crate) struct Pkcs11Uri {
    /// Which token.
    pub token: TokenSelector,
    /// `object=`: the object label.
    pub object: Option<String>,
    /// `id=`: the CKA_ID bytes.
    pub id: Option<Vec<u8>>,
    /// `type=`: private, public, cert, ...
    pub object_type: Option<String>,
    /// `module-path=`.
    pub module_path: Option<PathBuf>,
    /// `pin-source=`, as written.
    pub pin_source: Option<String>,
    /// `pin-value=`.
    pub pin_value: Option<AuthPin>,
}

/// Parses an RFC 7512 URI.
///
/// # Errors
/// `Config.Invalid` naming the attribute that is wrong.
#[cfg_attr(
    not(feature = "cli"),
    allow(dead_code, reason = "only the command line reads pkcs11: URIs")
)]
pub(crate) fn parse(uri: &str) -> Result<Pkcs11Uri> {
    let bad = |what: String| Error::Config(format!("{what} in pkcs11 URI"));
    let rest = uri
        .strip_prefix("pkcs11:")
        .ok_or_else(|| bad("no \"pkcs11:\" scheme".into()))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut out = Pkcs11Uri::default();
    let text = |name: &str, v: &str| -> Result<String> {
        String::from_utf8(decode(v)?).map_err(|_| bad(format!("{name}= is not UTF-8")))
    };
    // RFC 7512 section 2.3 forbids duplicate path attributes; a second PIN
    // or module in the query would be as ambiguous. Names only: a value may
    // be a PIN.
    let mut seen: Vec<&str> = Vec::new();
    let mut once = |name| {
        if seen.contains(&name) {
            return Err(bad(format!("{name}= given twice")));
        }
        seen.push(name);
        Ok(())
    };
    // An attribute without '=' is not shown either: it may be a mistyped
    // `pin-value`.
    let no_eq = |n: usize, part: &str| {
        bad(format!(
            "attribute {n} of the {part} has no '=' (not shown: it may hold a PIN)"
        ))
    };
    for (n, attr) in path.split(';').filter(|a| !a.is_empty()).enumerate() {
        let (name, value) = attr.split_once('=').ok_or_else(|| no_eq(n + 1, "path"))?;
        once(name)?;
        match name {
            "token" => out.token.label = Some(text(name, value)?),
            "serial" => out.token.serial = Some(text(name, value)?),
            "manufacturer" => out.token.manufacturer = Some(text(name, value)?),
            "model" => out.token.model = Some(text(name, value)?),
            "slot-id" => {
                out.token.slot_id = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("slot-id={value} is not a number")))?,
                )
            }
            "object" => out.object = Some(text(name, value)?),
            "id" => out.id = Some(decode(value)?),
            "type" => out.object_type = Some(text(name, value)?),
            "library-manufacturer"
            | "library-description"
            | "library-version"
            | "slot-description"
            | "slot-manufacturer" => {
                log::debug!("ignoring {name}= in the pkcs11 URI");
            }
            other => return Err(bad(format!("unknown attribute {other:?}"))),
        }
    }
    for (n, attr) in query.split('&').filter(|a| !a.is_empty()).enumerate() {
        let (name, value) = attr.split_once('=').ok_or_else(|| no_eq(n + 1, "query"))?;
        if matches!(name, "module-path" | "pin-source" | "pin-value") {
            once(name)?;
        }
        match name {
            "module-path" => out.module_path = Some(PathBuf::from(text(name, value)?)),
            "pin-source" => out.pin_source = Some(text(name, value)?),
            "pin-value" => {
                let raw = Zeroizing::new(decode(value)?);
                let pin =
                    std::str::from_utf8(&raw).map_err(|_| bad("pin-value= is not UTF-8".into()))?;
                out.pin_value = Some(AuthPin::from(pin));
            }
            // RFC 7512 section 2.3: unknown query attributes may be ignored.
            other => log::debug!("ignoring query attribute {other}= in the pkcs11 URI"),
        }
    }
    Ok(out)
}

/// RFC 3986 section 2.1 percent-decoding: `%` and exactly two hex digits.
fn decode(value: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((plain, escaped)) = rest.split_once('%') {
        out.extend_from_slice(plain.as_bytes());
        // The digit check matters: from_str_radix would take "+1".
        let byte = escaped
            .get(..2)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| {
                Error::Config("bad percent-encoding in a pkcs11 URI value (the value is not shown: it may be a PIN)".into())
            })?;
        out.push(byte);
        rest = &escaped[2..];
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn parses_what_it_writes_and_what_p11tool_writes() {
        let id = [0x01, 0xab, 0x3b];
        let u = parse(&private_key_uri(
            "My Token;1",
            "12ab",
            "hsm-csr:*.example.com",
            &id,
        ))
        .unwrap();
        assert_eq!(u.token.label.as_deref(), Some("My Token;1"));
        assert_eq!(u.token.serial.as_deref(), Some("12ab"));
        assert_eq!(u.object.as_deref(), Some("hsm-csr:*.example.com"));
        assert_eq!(u.id.as_deref(), Some(&id[..]));
        assert_eq!(u.object_type.as_deref(), Some("private"));

        let u = parse(
            "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=5a4262c2777696d4;\
             token=demo;slot-id=17?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin&x-vendor=1",
        )
        .unwrap();
        assert_eq!(u.token.model.as_deref(), Some("SoftHSM v2"));
        assert_eq!(u.token.slot_id, Some(17));
        assert_eq!(
            u.module_path.unwrap(),
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.pin_source.as_deref(), Some("file:/etc/pin"));
        let u = parse("pkcs11:token=t?pin-value=12%334").unwrap();
        assert_eq!(u.pin_value.unwrap().expose_secret(), "1234");
    }

    #[test]
    fn a_bad_pin_value_is_not_echoed() {
        for uri in [
            "pkcs11:token=t?pin-value=s3cr%3",
            "pkcs11:token=t?pin-value:s3cr",
            "pkcs11:token=t?s3cr",
            "pkcs11:token=t?pin-value=s3cr&pin-value=s3cr",
            "pkcs11:token=t;pin-value:s3cr",
        ] {
            let e = parse(uri).unwrap_err();
            assert_eq!(e.code(), "Config.Invalid", "{uri}");
            assert!(!e.to_string().contains("s3cr"), "{uri}: {e}");
        }
        // What it says instead: where the attribute is.
        for (uri, part) in [
            (
                "pkcs11:token=t;;serial=1;pin-value:1",
                "attribute 3 of the path",
            ),
            (
                "pkcs11:token=t?pin-source=f&&pin-value:1",
                "attribute 2 of the query",
            ),
        ] {
            let e = parse(uri).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{part} has no '='")), "{e}");
        }
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(decode("").unwrap(), b"");
        assert_eq!(decode("a%2fb%2F%00%ff").unwrap(), b"a/b/\0\xff");
        assert_eq!(decode("%41%42c%").ok(), None);
        assert_eq!(decode("%e6%9d%ad").unwrap(), "杭".as_bytes());
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for bad in [
            "token=x",
            "pkcs11:colour=red",
            "pkcs11:slot-id=x",
            "pkcs11:id=%zz",
            "pkcs11:id=%+1",
            "pkcs11:id=%1",
            "pkcs11:id=%",
            "pkcs11:object=%c3%a9%c3",
            "pkcs11:token",
        ] {
            assert_eq!(parse(bad).unwrap_err().code(), "Config.Invalid", "{bad}");
        }
    }

    /// RFC 7512 section 2.3: "A PKCS #11 URI must not contain duplicate
    /// attributes of the same name in the URI path component." Taking the
    /// first or the last would let one URI name two tokens; the same goes
    /// for two PINs or two modules in the query.
    #[test]
    fn refuses_an_attribute_given_twice() {
        for (uri, name) in [
            ("pkcs11:token=a;token=b", "token"),
            ("pkcs11:token=a;serial=1;object=k;serial=2", "serial"),
            ("pkcs11:id=%01;id=%02", "id"),
            ("pkcs11:slot-id=1;slot-id=1", "slot-id"),
            (
                "pkcs11:library-version=1;library-version=2",
                "library-version",
            ),
            ("pkcs11:token=t?pin-value=1111&pin-value=2222", "pin-value"),
            (
                "pkcs11:token=t?pin-source=file:/a&pin-source=file:/b",
                "pin-source",
            ),
            (
                "pkcs11:token=t?module-path=/a.so&module-path=/b.so",
                "module-path",
            ),
        ] {
            let e = parse(uri).unwrap_err();
            assert_eq!(e.code(), "Config.Invalid", "{uri}");
            assert!(
                e.to_string().contains(&format!("{name}= given twice")),
                "{uri}: {e}"
            );
            assert!(!e.to_string().contains("2222"), "{e}");
        }
        // Vendor query attributes are ignored, however often they appear.
        assert!(parse("pkcs11:token=t?x-a=1&x-a=2").is_ok());
    }

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

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn what_it_prints_parses_back_to_the_same_key(
            token in ".{0,12}",
            serial in "[ -~]{0,8}",
            object in ".{0,16}",
            id in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let uri = private_key_uri(&token, &serial, &object, &id);
            // RFC 7512 section 2.3: the URI is ASCII and every delimiter in
            // a value is escaped, so the only ';' are the printer's own.
            prop_assert!(uri.is_ascii(), "{}", uri);
            prop_assert_eq!(uri.matches(';').count(), 3 + usize::from(!serial.is_empty()));
            prop_assert!(!uri.contains(['?', '&', ' ']), "{}", uri);
            let u = parse(&uri).unwrap();
            prop_assert_eq!(u.token.label, Some(token));
            prop_assert_eq!(u.token.serial, (!serial.is_empty()).then_some(serial));
            prop_assert_eq!(u.object, Some(object));
            prop_assert_eq!(u.id, Some(id));
            prop_assert_eq!(u.object_type.as_deref(), Some("private"));
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(
            text in prop_oneof![
                ".{0,40}",
                "pkcs11:[a-z=;?&%0-9A-Fa-f/:.-]{0,40}",
                "pkcs11:((token|serial|object|id|slot-id|type|model)=[%0-9a-fA-Fxz;]{0,6};?){0,5}(\\?(pin-value|module-path|x)=[%0-9a-f]{0,6}&?){0,3}",
            ],
        ) {
            if let Err(e) = parse(&text) {
                prop_assert_eq!(e.code(), "Config.Invalid");
            }
        }
    }
}
