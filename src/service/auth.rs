//! Who is calling: the request's signature, checked against the configured
//! access keys, in either scheme of [`super::request_signing`].
//!
//! A signature vouches for what the request means only if nothing that
//! changes the meaning can change while the signature stays the same. So
//! a request is refused, never guessed at, when it carries a parameter twice
//! (the SDKs never do; which one counts would be a guess), a form body
//! whose `content-type` an ACS3 signature does not cover, a header it reads
//! or signs twice, bytes that are not UTF-8 (a lossy decoding would read
//! two requests as one), or an STS security token (which hsm-csr cannot
//! check, so the caller's scoped credentials would silently not apply).

use std::collections::HashSet;

use super::api::ApiError;
use super::request_signing::{self, Acs3Authorization};

/// A request as received, before anything is trusted.
#[derive(Debug)]
pub(crate) struct RawRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The path, `/`.
    pub path: &'a str,
    /// The raw query string (no `?`).
    pub query: &'a str,
    /// Every header as (name, value bytes), in the order received.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The body.
    pub body: &'a [u8],
}

impl RawRequest<'_> {
    /// The trimmed value of header `name`, if present. Refused when it
    /// comes twice or is not UTF-8.
    fn header(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v);
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::DuplicateHeader(shown(name.as_bytes())));
        }
        let value =
            std::str::from_utf8(value).map_err(|_| ApiError::NotUtf8(shown(name.as_bytes())))?;
        Ok(Some(value.trim()))
    }
}

/// Whether a `content-type` value is `application/x-www-form-urlencoded`
/// (RFC 9110 §8.3.1: the type is case-insensitive, parameters follow `;`).
fn is_form(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default();
    media_type
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// What a verified request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verified {
    /// The caller's access key id.
    pub access_key_id: String,
    /// Action and Version.
    pub action: String,
    /// API version.
    pub version: String,
    /// `JSON` (default) or `XML`.
    pub format: String,
    /// Every query and form parameter, each name once.
    pub params: Vec<(String, String)>,
    /// SignatureNonce / x-acs-signature-nonce.
    pub nonce: String,
    /// Timestamp / x-acs-date, in seconds since the epoch.
    pub timestamp: i64,
}

/// A parameter or header name as an error message shows it: printable
/// ASCII but `%`, `"` and `\` as is, every other byte as `%XX`, cut after
/// 64 bytes. It cannot break the message, its JSON or XML, or a log
/// line.
pub(crate) fn shown(name: &[u8]) -> String {
    let mut out = String::new();
    for &b in name.iter().take(64) {
        if (b' '..=b'~').contains(&b) && !b"%\"\\".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() > 64 {
        out.push_str("...");
    }
    out
}

/// The access key id a request claims, whether or not its signature
/// holds, as [`shown`] prints it (escaped, at most 64 bytes): for the log
/// line of a request that failed to authenticate. Empty when it names none.
pub(crate) fn claimed_access_key_id(req: &RawRequest<'_>) -> String {
    if let Ok(Some(auth)) = req.header("authorization") {
        return request_signing::parse_acs3(auth)
            .map(|a| shown(a.access_key_id.as_bytes()))
            .unwrap_or_default();
    }
    let mut pieces: Vec<&[u8]> = req.query.as_bytes().split(|&b| b == b'&').collect();
    if req.method == "POST"
        && req
            .header("content-type")
            .ok()
            .flatten()
            .is_some_and(is_form)
    {
        pieces.extend(req.body.split(|&b| b == b'&'));
    }
    pieces
        .iter()
        .find_map(|p| p.strip_prefix(b"AccessKeyId="))
        .map(|raw| {
            let plus: Vec<u8> = raw
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect();
            shown(&percent_encoding::percent_decode(&plus).collect::<Vec<u8>>())
        })
        .unwrap_or_default()
}

/// `application/x-www-form-urlencoded` parsing (WHATWG URL §5.1): split on
/// `&`, skip empty pieces, split each at its first `=`, read `+` as a space,
/// percent-decode. Unlike the lossy decoders, a name or value that is not
/// UTF-8 afterwards is refused.
fn decode(s: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let text = |raw: &[u8]| {
        let plus: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        String::from_utf8(percent_encoding::percent_decode(&plus).collect())
    };
    let mut params = Vec::new();
    for piece in s.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let mut halves = piece.splitn(2, |&b| b == b'=');
        let name = halves.next().unwrap_or_default();
        let value = halves.next().unwrap_or_default();
        let name = text(name).map_err(|e| ApiError::NotUtf8(shown(e.as_bytes())))?;
        let value = text(value).map_err(|_| ApiError::NotUtf8(shown(name.as_bytes())))?;
        params.push((name, value));
    }
    Ok(params)
}

/// `Format`, upper-cased; JSON when absent.
fn format_of(params: &[(String, String)]) -> String {
    get(params, "Format").unwrap_or("JSON").to_ascii_uppercase()
}

fn get<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Checks the signature of `req` with the secret `secret_of` gives for its
/// access key id.
///
/// # Errors
/// The cloud's error for each way a request can fail to authenticate.
pub(crate) fn authenticate<'s>(
    req: &RawRequest<'_>,
    secret_of: impl Fn(&str) -> Option<&'s str>,
) -> Result<Verified, ApiError> {
    if req
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-acs-security-token"))
    {
        return Err(ApiError::SecurityTokenUnsupported);
    }
    let query = decode(req.query.as_bytes())?;
    let mut params = query.clone();
    if req.method == "POST" && req.header("content-type")?.is_some_and(is_form) {
        params.extend(decode(req.body)?);
    }
    let mut seen = HashSet::new();
    if let Some((name, _)) = params.iter().find(|(k, _)| !seen.insert(k)) {
        return Err(ApiError::DuplicateParameter(shown(name.as_bytes())));
    }
    if get(&params, "SecurityToken").is_some() {
        return Err(ApiError::SecurityTokenUnsupported);
    }
    match req.header("authorization")? {
        Some(auth) => {
            let auth = request_signing::parse_acs3(auth).ok_or(ApiError::IncompleteSignature)?;
            verify_acs3(req, &query, params, auth, secret_of)
        }
        None => verify_rpc(req, params, secret_of),
    }
}

fn verify_rpc<'s>(
    req: &RawRequest<'_>,
    mut params: Vec<(String, String)>,
    secret_of: impl Fn(&str) -> Option<&'s str>,
) -> Result<Verified, ApiError> {
    let required = |name: &'static str| get(&params, name).ok_or(ApiError::MissingParameter(name));
    let signature_part = |name: &str| get(&params, name).ok_or(ApiError::IncompleteSignature);
    let access_key_id = required("AccessKeyId")?.to_owned();
    let signature_given = signature_part("Signature")?.to_owned();
    if signature_part("SignatureMethod")? != "HMAC-SHA1"
        || signature_part("SignatureVersion")? != "1.0"
    {
        return Err(ApiError::IncompleteSignature);
    }
    let nonce = signature_part("SignatureNonce")?.to_owned();
    let timestamp = request_signing::parse_timestamp(required("Timestamp")?)
        .ok_or(ApiError::InvalidTimeStampFormat)?;
    let action = required("Action")?.to_owned();
    let version = required("Version")?.to_owned();
    let secret = secret_of(&access_key_id).ok_or(ApiError::InvalidAccessKeyId)?;
    let string_to_sign = request_signing::rpc_string_to_sign(req.method, &params);
    let expected = request_signing::rpc_signature(secret, &string_to_sign);
    if !request_signing::matches(&expected, &signature_given) {
        return Err(ApiError::SignatureDoesNotMatch(Some(string_to_sign)));
    }
    let format = format_of(&params);
    params.retain(|(k, _)| k != "Signature");
    Ok(Verified {
        access_key_id,
        action,
        version,
        format,
        params,
        nonce,
        timestamp,
    })
}

/// Headers an ACS3 signature must cover, or a signed request could be
/// replayed with another action, date or body.
const MUST_SIGN: [&str; 6] = [
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
];

fn verify_acs3<'s>(
    req: &RawRequest<'_>,
    query: &[(String, String)],
    params: Vec<(String, String)>,
    auth: Acs3Authorization,
    secret_of: impl Fn(&str) -> Option<&'s str>,
) -> Result<Verified, ApiError> {
    let is_signed = |name: &str| auth.signed_headers.iter().any(|s| s == name);
    if !MUST_SIGN.iter().all(|h| is_signed(h)) {
        return Err(ApiError::IncompleteSignature);
    }
    // Unsigned, `content-type` could be added, changed or dropped to make
    // the body count as parameters or not.
    if !req.body.is_empty() && !is_signed("content-type") {
        return Err(ApiError::UnsignedContentType);
    }
    let mut names: Vec<&str> = auth.signed_headers.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut signed = Vec::new();
    for name in names {
        signed.push((name, req.header(name)?.unwrap_or_default()));
    }
    let header = |name: &str| {
        signed
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or(ApiError::IncompleteSignature)
    };
    let payload_hash = header("x-acs-content-sha256")?;
    if !request_signing::matches(&request_signing::sha256_hex(req.body), payload_hash) {
        return Err(ApiError::SignatureDoesNotMatch(None));
    }
    let timestamp = request_signing::parse_timestamp(header("x-acs-date")?)
        .ok_or(ApiError::InvalidTimeStampFormat)?;
    let nonce = header("x-acs-signature-nonce")?.to_owned();
    let action = header("x-acs-action")?.to_owned();
    let version = header("x-acs-version")?.to_owned();
    let secret = secret_of(&auth.access_key_id).ok_or(ApiError::InvalidAccessKeyId)?;
    let canonical =
        request_signing::acs3_canonical_request(req.method, req.path, query, &signed, payload_hash);
    if !request_signing::matches(
        &request_signing::acs3_signature(secret, &canonical),
        &auth.signature,
    ) {
        return Err(ApiError::SignatureDoesNotMatch(None));
    }
    let format = format_of(&params);
    Ok(Verified {
        access_key_id: auth.access_key_id,
        action,
        version,
        format,
        params,
        nonce,
        timestamp,
    })
}

#[cfg(test)]
mod tests;
