//! The two request signatures the official Alibaba Cloud SDKs send by
//! default, checked on the server side.
//!
//! **RPC, SignatureVersion 1.0, HMAC-SHA1** (aliyun-python-sdk-core, and
//! alibabacloud-tea-openapi with `signature_algorithm = "v2"`):
//!
//! ```text
//! CanonicalizedQuery = join("&", pe(name) "=" pe(value)  sorted by name)  -- every query and form
//!                                                                          -- parameter but Signature
//! StringToSign       = Method "&" pe("/") "&" pe(CanonicalizedQuery)
//! Signature          = base64(HMAC-SHA1(AccessKeySecret "&", StringToSign))
//! ```
//!
//! **ACS3-HMAC-SHA256** (alibabacloud-tea-openapi's default), in the
//! `Authorization: ACS3-HMAC-SHA256 Credential=ID,SignedHeaders=h1;h2,Signature=hex` header:
//!
//! ```text
//! CanonicalRequest = Method "\n" Path "\n" CanonicalQuery "\n"
//!                    join("", lower(h) ":" trim(v) "\n" for h in sorted(SignedHeaders)) "\n"
//!                    join(";", sorted(SignedHeaders)) "\n" hex(SHA256(body))   -- = x-acs-content-sha256
//! CanonicalQuery   = join("&", pe(name) "=" pe(value)  sorted by name)
//! StringToSign     = "ACS3-HMAC-SHA256" "\n" hex(SHA256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(AccessKeySecret, StringToSign))
//! ```
//!
//! `pe` is RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - _ . ~`
//! becomes `%XX` (uppercase hex). Names are sorted as decoded, by code
//! point, as the SDKs sort them. The SDKs' ACS3 signers put names into
//! CanonicalQuery unencoded; every name they send is made of unreserved
//! characters, for which that is the same string. Encoding names keeps
//! `a%3Db=c` (one parameter `a=b`) from signing like `a=b&...` would: with
//! names and values encoded, no `=` or `&` inside them survives, so one
//! CanonicalQuery stands for one set of parameters. Signatures are compared
//! in constant time.

use std::borrow::Cow;
use std::fmt::Write;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ring::{digest, hmac};
use time::PrimitiveDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// Every byte but RFC 3986 section 2.3's unreserved characters
/// (`ALPHA / DIGIT / "-" / "." / "_" / "~"`) is percent-encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// RFC 3986 percent-encoding of `s` (UTF-8), as both schemes use it.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// `join("&", pe(name) "=" pe(value))`, sorted by the decoded name (then
/// value), as the SDKs sort their parameter maps.
fn canonical_query<'a>(params: impl Iterator<Item = &'a (String, String)>) -> String {
    let mut pairs: Vec<&(String, String)> = params.collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The RPC StringToSign over `params` (decoded; `Signature` is left out).
pub fn rpc_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let canonical = canonical_query(params.iter().filter(|(k, _)| k != "Signature"));
    format!("{method}&%2F&{}", percent_encode(&canonical))
}

/// base64(HMAC-SHA1(secret + "&", string_to_sign)).
pub fn rpc_signature(secret: &str, string_to_sign: &str) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{secret}&").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, string_to_sign.as_bytes()))
}

/// The parts of an `Authorization: ACS3-HMAC-SHA256 ...` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acs3Authorization {
    /// The access key id (`Credential=`).
    pub access_key_id: String,
    /// Lowercase header names, in the order given.
    pub signed_headers: Vec<String>,
    /// Hex HMAC.
    pub signature: String,
}

/// Parses the Authorization header; None when it is not a complete ACS3
/// one, or names a field twice.
pub(crate) fn parse_acs3(header: &str) -> Option<Acs3Authorization> {
    let rest = header.strip_prefix("ACS3-HMAC-SHA256 ")?;
    let (mut id, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let first = match k {
            "Credential" => id.replace(v.to_owned()).is_none(),
            "SignedHeaders" => signed
                .replace(v.split(';').map(str::to_ascii_lowercase).collect())
                .is_none(),
            "Signature" => sig.replace(v.to_owned()).is_none(),
            _ => true,
        };
        if !first {
            return None;
        }
    }
    Some(Acs3Authorization {
        access_key_id: id.filter(|i: &String| !i.is_empty())?,
        signed_headers: signed?,
        signature: sig.filter(|s: &String| !s.is_empty())?,
    })
}

/// The ACS3 CanonicalRequest. `query` holds the decoded query parameters;
/// `signed_headers` (lowercase name, value) each signed header once, with
/// an empty value for one the request lacks.
pub fn acs3_canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    signed_headers: &[(&str, &str)],
    payload_sha256_hex: &str,
) -> String {
    let mut headers = signed_headers.to_vec();
    headers.sort_unstable();
    let mut canonical_headers = String::new();
    for (name, value) in &headers {
        let _ = writeln!(canonical_headers, "{name}:{}", value.trim());
    }
    let names = headers
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(";");
    format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{names}\n{payload_sha256_hex}",
        if path.is_empty() { "/" } else { path },
        canonical_query(query.iter())
    )
}

/// hex(HMAC-SHA256(secret, "ACS3-HMAC-SHA256\n" hex(SHA256(canonical_request)))).
pub fn acs3_signature(secret: &str, canonical_request: &str) -> String {
    let string_to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    crate::fingerprint::hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref())
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    crate::fingerprint::hex(digest::digest(&digest::SHA256, data).as_ref())
}

/// Constant-time comparison of two signatures.
pub(crate) fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `YYYY-MM-DDTHH:MM:SSZ`, digits only, every field zero-padded.
const TIMESTAMP: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Seconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SSZ` (the SDKs'
/// Timestamp and x-acs-date; RFC 3339 `date-time` in UTC, seconds 00-60),
/// or None for anything else, including dates the calendar lacks.
///
/// The calendar is the `time` crate's. Two things are settled here first:
/// the length, since `time` would read a signed year (`+2026-...`), which
/// this format has not; and second 60, which RFC 3339 section 5.6 allows
/// (`time-second = 2DIGIT ; 00-58, 00-59, 00-60 based on leap second
/// rules`) and `time` does not: it is read as the first second of the next
/// minute.
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    if s.len() != 20 {
        return None;
    }
    let (s, leap) = match s.strip_suffix(":60Z") {
        Some(head) => (Cow::Owned(format!("{head}:59Z")), 1),
        None => (Cow::Borrowed(s), 0),
    };
    let t = PrimitiveDateTime::parse(&s, TIMESTAMP).ok()?;
    Some(t.assume_utc().unix_timestamp() + leap)
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`, as a caller
/// writes Timestamp and x-acs-date: the inverse of [`parse_timestamp`]. None
/// outside the years 0000 to 9999.
pub(crate) fn format_timestamp(secs: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    t.format(TIMESTAMP).ok()
}

/// Now, as `format_timestamp` writes it.
pub fn timestamp_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    format_timestamp(secs).unwrap_or_default()
}

#[cfg(test)]
mod tests;
