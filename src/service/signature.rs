//! The two request signatures the official Alibaba Cloud SDKs send by
//! default, checked on the server side.
//!
//! **RPC, SignatureVersion 1.0, HMAC-SHA1** (aliyun-python-sdk-core, and
//! alibabacloud-tea-openapi with `signature_algorithm = "v2"`):
//!
//! ```text
//! CanonicalizedQuery = join("&", sorted(pe(name) "=" pe(value)))   -- every query and form
//!                                                                    -- parameter but Signature
//! StringToSign       = Method "&" pe("/") "&" pe(CanonicalizedQuery)
//! Signature          = base64(HMAC-SHA1(AccessKeySecret "&", StringToSign))
//! ```
//!
//! **ACS3-HMAC-SHA256** (alibabacloud-tea-openapi's default), in the
//! `Authorization: ACS3-HMAC-SHA256 Credential=ID,SignedHeaders=h1;h2,Signature=hex` header:
//!
//! ```text
//! CanonicalRequest = Method "\n" Path "\n" CanonicalQuery "\n"
//!                    join("", lower(h) ":" trim(v) "\n" for h in SignedHeaders) "\n"
//!                    SignedHeaders "\n" hex(SHA256(body))      -- = x-acs-content-sha256
//! CanonicalQuery   = join("&", sorted(name "=" pe(value)))
//! StringToSign     = "ACS3-HMAC-SHA256" "\n" hex(SHA256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(AccessKeySecret, StringToSign))
//! ```
//!
//! `pe` is RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - _ . ~`
//! becomes `%XX` (uppercase hex). Signatures are compared in constant time.

use std::fmt::Write;

use base64::Engine;
use ring::{digest, hmac};

/// RFC 3986 percent-encoding of `s` (UTF-8), as both schemes use it.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The RPC StringToSign over `params` (decoded; `Signature` is left out).
pub fn rpc_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    pairs.sort();
    let canonical = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
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

/// Parses the Authorization header; None when it is not a complete ACS3 one.
pub fn parse_acs3(header: &str) -> Option<Acs3Authorization> {
    let rest = header.strip_prefix("ACS3-HMAC-SHA256 ")?;
    let (mut id, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => id = Some(v.to_owned()),
            "SignedHeaders" => signed = Some(v.split(';').map(str::to_ascii_lowercase).collect()),
            "Signature" => sig = Some(v.to_owned()),
            _ => {}
        }
    }
    Some(Acs3Authorization {
        access_key_id: id.filter(|i: &String| !i.is_empty())?,
        signed_headers: signed?,
        signature: sig.filter(|s: &String| !s.is_empty())?,
    })
}

/// The ACS3 CanonicalRequest. `headers` yields (lowercase name, value) for
/// every header received; `query` the decoded query parameters.
pub fn acs3_canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    signed_headers: &[String],
    payload_sha256_hex: &str,
) -> String {
    let mut q: Vec<(&str, String)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), percent_encode(v)))
        .collect();
    q.sort();
    let canonical_query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut names: Vec<&String> = signed_headers.iter().collect();
    names.sort();
    names.dedup();
    let mut canonical_headers = String::new();
    for name in &names {
        let mut values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == *name)
            .map(|(_, v)| v.trim())
            .collect();
        values.sort_unstable();
        let _ = writeln!(canonical_headers, "{name}:{}", values.join(","));
    }
    let signed = names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(";");
    format!(
        "{method}\n{}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload_sha256_hex}",
        if path.is_empty() { "/" } else { path }
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
pub fn sha256_hex(data: &[u8]) -> String {
    crate::fingerprint::hex(digest::digest(&digest::SHA256, data).as_ref())
}

/// Constant-time comparison of two signatures.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SSZ` (the SDKs'
/// Timestamp and x-acs-date), or None.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_is_rfc3986() {
        assert_eq!(
            percent_encode("a.example,b*c d~e/f+g"),
            "a.example%2Cb%2Ac%20d~e%2Ff%2Bg"
        );
        assert_eq!(percent_encode("杭"), "%E6%9D%AD");
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2026-11-22T23:17:35Z"), Some(1_795_389_455));
        assert_eq!(parse_timestamp("2026-11-22 23:17:35"), None);
        assert_eq!(parse_timestamp("2026-13-22T23:17:35Z"), None);
    }

    /// The README's RPC worked example; the expected signature was computed
    /// by alibabacloud-tea-openapi's own `get_rpcsignature`.
    #[test]
    fn rpc_worked_example() {
        let params: Vec<(String, String)> = [
            ("AccessKeyId", "testid"),
            ("Action", "CreateCdnCertificateSigningRequest"),
            ("CommonName", "www.example.com"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2026-11-22T12:00:00Z"),
            ("Version", "2018-05-10"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sts = rpc_string_to_sign("GET", &params);
        assert_eq!(
            sts,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DCreateCdnCertificateSigningRequest%26CommonName%3Dwww.example.com\
             %26Format%3DJSON%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2026-11-22T12%253A00%253A00Z%26Version%3D2018-05-10"
        );
        assert_eq!(
            rpc_signature("testsecret", &sts),
            include_str!("../../tests/fixtures/rpc-example.sig").trim()
        );
    }

    /// The README's ACS3 worked example; the expected Authorization header
    /// was computed by alibabacloud-tea-openapi's own `get_authorization`.
    #[test]
    fn acs3_worked_example() {
        let query = vec![
            ("CommonName".to_owned(), "www.example.com".to_owned()),
            ("SANs".to_owned(), "www.example.com,example.com".to_owned()),
        ];
        let empty_body = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let headers: Vec<(String, String)> = [
            ("host", "127.0.0.1:8080"),
            ("x-acs-action", "CreateCdnCertificateSigningRequest"),
            ("x-acs-version", "2018-05-10"),
            ("x-acs-date", "2026-11-22T12:00:00Z"),
            ("x-acs-signature-nonce", "3ee8c1b883d344afa94f4e0ad82fd6cf"),
            ("x-acs-content-sha256", empty_body),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let expected =
            parse_acs3(include_str!("../../tests/fixtures/acs3-example.authorization").trim())
                .unwrap();
        let canonical = acs3_canonical_request(
            "POST",
            "/",
            &query,
            &headers,
            &expected.signed_headers,
            empty_body,
        );
        assert_eq!(
            canonical,
            "POST\n/\nCommonName=www.example.com&SANs=www.example.com%2Cexample.com\n\
             host:127.0.0.1:8080\nx-acs-action:CreateCdnCertificateSigningRequest\n\
             x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-acs-date:2026-11-22T12:00:00Z\nx-acs-signature-nonce:3ee8c1b883d344afa94f4e0ad82fd6cf\n\
             x-acs-version:2018-05-10\n\n\
             host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(acs3_signature("testsecret", &canonical), expected.signature);
    }

    #[test]
    fn acs3_header_parsing() {
        let a = parse_acs3(
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host;X-Acs-Date,Signature=ab12",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AK");
        assert_eq!(a.signed_headers, ["host", "x-acs-date"]);
        assert_eq!(a.signature, "ab12");
        assert!(parse_acs3("ACS3-HMAC-SHA256 Credential=AK,Signature=ab12").is_none());
        assert!(parse_acs3("HMAC Credential=AK,SignedHeaders=host,Signature=x").is_none());
    }
}
