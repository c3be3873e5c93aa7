//! Who is calling: the request's signature, checked against the configured
//! access keys, in either scheme of [`super::signature`].

use super::api::ApiError;
use super::signature::{self, Acs3Authorization};

/// A request as received, before anything is trusted.
#[derive(Debug)]
pub struct RawRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The path, `/`.
    pub path: &'a str,
    /// The raw query string (no `?`).
    pub query: &'a str,
    /// Every header as (lowercase name, value).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: &'a [u8],
}

impl RawRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn is_form(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    }
}

/// What a verified request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The caller's access key id.
    pub access_key_id: String,
    /// Action and Version.
    pub action: String,
    /// API version.
    pub version: String,
    /// `JSON` (default) or `XML`.
    pub format: String,
    /// Every query and form parameter.
    pub params: Vec<(String, String)>,
    /// SignatureNonce / x-acs-signature-nonce.
    pub nonce: String,
    /// Timestamp / x-acs-date, in seconds since the epoch.
    pub timestamp: i64,
}

fn decode(s: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(s)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
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
pub fn verify<'s>(
    req: &RawRequest<'_>,
    secret_of: impl Fn(&str) -> Option<&'s str>,
) -> Result<Verified, ApiError> {
    let query = decode(req.query.as_bytes());
    let form = if req.method == "POST" && req.is_form() {
        decode(req.body)
    } else {
        Vec::new()
    };
    let mut params = query.clone();
    params.extend(form);

    if let Some(auth) = req.header("authorization") {
        let auth = signature::parse_acs3(auth).ok_or(ApiError::IncompleteSignature)?;
        return verify_acs3(req, &query, params, auth, secret_of);
    }

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
    let timestamp = signature::parse_timestamp(required("Timestamp")?)
        .ok_or(ApiError::InvalidTimeStampFormat)?;
    let action = required("Action")?.to_owned();
    let version = required("Version")?.to_owned();
    let secret = secret_of(&access_key_id).ok_or(ApiError::InvalidAccessKeyId)?;
    let string_to_sign = signature::rpc_string_to_sign(req.method, &params);
    let expected = signature::rpc_signature(secret, &string_to_sign);
    if !signature::matches(&expected, &signature_given) {
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
    if MUST_SIGN
        .iter()
        .any(|h| !auth.signed_headers.iter().any(|s| s == h))
    {
        return Err(ApiError::IncompleteSignature);
    }
    let header = |name: &str| req.header(name).ok_or(ApiError::IncompleteSignature);
    let payload_hash = header("x-acs-content-sha256")?;
    if !signature::matches(&signature::sha256_hex(req.body), payload_hash) {
        return Err(ApiError::SignatureDoesNotMatch(None));
    }
    let timestamp = signature::parse_timestamp(header("x-acs-date")?)
        .ok_or(ApiError::InvalidTimeStampFormat)?;
    let nonce = header("x-acs-signature-nonce")?.to_owned();
    let action = header("x-acs-action")?.to_owned();
    let version = header("x-acs-version")?.to_owned();
    let secret = secret_of(&auth.access_key_id).ok_or(ApiError::InvalidAccessKeyId)?;
    let canonical = signature::acs3_canonical_request(
        req.method,
        req.path,
        query,
        &req.headers,
        &auth.signed_headers,
        payload_hash,
    );
    if !signature::matches(
        &signature::acs3_signature(secret, &canonical),
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
mod tests {
    use super::*;

    /// Requests the official SDKs sent (captured on 127.0.0.1, secret
    /// "SECRET"): each must verify, and fail once any byte is changed.
    #[test]
    fn official_sdk_requests_verify() {
        let vectors: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../tests/fixtures/sdk-requests.json")).unwrap();
        assert_eq!(vectors.len(), 3);
        for v in &vectors {
            let path = v["path"].as_str().unwrap();
            let (p, q) = path.split_once('?').unwrap_or((path, ""));
            let headers: Vec<(String, String)> = v["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, val)| (k.to_ascii_lowercase(), val.as_str().unwrap().to_owned()))
                .collect();
            let req = RawRequest {
                method: v["method"].as_str().unwrap(),
                path: p,
                query: q,
                headers,
                body: v["body"].as_str().unwrap().as_bytes(),
            };
            let sdk = v["sdk"].as_str().unwrap();
            let ok = verify(&req, |id| (id == "AKID").then_some("SECRET"))
                .unwrap_or_else(|e| panic!("{sdk}: {e:?}"));
            assert_eq!(ok.action, "CreateCdnCertificateSigningRequest", "{sdk}");
            assert_eq!(ok.version, "2018-05-10", "{sdk}");
            assert_eq!(
                get(&ok.params, "SANs"),
                Some("a.example,b.example"),
                "{sdk}"
            );
            assert!(
                matches!(
                    verify(&req, |id| (id == "AKID").then_some("WRONG")).unwrap_err(),
                    ApiError::SignatureDoesNotMatch(_)
                ),
                "{sdk}"
            );
            assert_eq!(
                verify(&req, |_| None).unwrap_err(),
                ApiError::InvalidAccessKeyId,
                "{sdk}"
            );
            let tampered = q.replace("a.example", "evil.example");
            let req2 = RawRequest {
                query: &tampered,
                ..req
            };
            assert!(
                matches!(
                    verify(&req2, |id| (id == "AKID").then_some("SECRET")).unwrap_err(),
                    ApiError::SignatureDoesNotMatch(_)
                ),
                "{sdk}"
            );
        }
    }
}
