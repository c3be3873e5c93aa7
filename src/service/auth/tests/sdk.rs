//! Requests built and signed the way the official SDKs build and sign
//! them, written out here independently of the code under test.

use base64::Engine;
use ring::hmac;

use super::*;
use crate::service::request_signing::{percent_encode, sha256_hex};

pub(super) const FORM: &str = "application/x-www-form-urlencoded";

/// A request owned by the test; [`Req::raw`] lends it out as received.
#[derive(Clone, Debug)]
pub(super) struct Req {
    pub method: String,
    pub query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Req {
    pub(super) fn raw(&self) -> RawRequest<'_> {
        RawRequest {
            method: &self.method,
            path: "/",
            query: &self.query,
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect(),
            body: &self.body,
        }
    }

    pub(super) fn authenticate(&self) -> Result<Verified, ApiError> {
        authenticate(&self.raw(), |id| (id == "AKID").then_some("SECRET"))
    }

    pub(super) fn with(mut self, name: &str, value: &[u8]) -> Req {
        self.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    pub(super) fn without(mut self, name: &str) -> Req {
        self.headers.retain(|(n, _)| n != name);
        self
    }
}

pub(super) fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the SDKs put on the wire (Python's urlencode: `quote_plus`).
pub(super) fn urlencode(params: &[(String, String)]) -> String {
    let plus = |s: &str| percent_encode(s).replace("%20", "+");
    params
        .iter()
        .map(|(k, v)| format!("{}={}", plus(k), plus(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The SDKs' own canonical query, written out as they do it: sorted by
/// the name as given; RPC encodes names, ACS3 (alibabacloud-tea-openapi's
/// `get_canonical_query_string`) does not.
fn sdk_query(params: &[(String, String)], encode_names: bool) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(k, v)| {
            let k = if encode_names {
                percent_encode(k)
            } else {
                k.clone()
            };
            format!("{k}={}", percent_encode(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An RPC request as aliyun-python-sdk-core signs it: the common
/// parameters and `query` in the query string, `form` as a form body (a
/// POST then).
pub(super) fn rpc(query: &[(String, String)], form: &[(String, String)]) -> Req {
    let common = owned(&[
        ("AccessKeyId", "AKID"),
        ("Action", "CreateCdnCertificateSigningRequest"),
        ("Version", "2018-05-10"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "nonce-1"),
        ("Timestamp", "2026-11-22T12:00:00Z"),
    ]);
    sign_rpc([common, query.to_vec()].concat(), form)
}

/// A request over exactly `query` and `form`, signed as
/// aliyun-python-sdk-core signs.
pub(super) fn sign_rpc(mut query: Vec<(String, String)>, form: &[(String, String)]) -> Req {
    let method = if form.is_empty() { "GET" } else { "POST" };
    let all: Vec<_> = query.iter().chain(form).cloned().collect();
    let sts = format!("{method}&%2F&{}", percent_encode(&sdk_query(&all, true)));
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"SECRET&");
    let signature =
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, sts.as_bytes()).as_ref());
    query.push(("Signature".into(), signature));
    let mut req = Req {
        method: method.into(),
        query: urlencode(&query),
        headers: vec![("host".into(), b"127.0.0.1:8080".to_vec())],
        body: urlencode(form).into_bytes(),
    };
    if !form.is_empty() {
        req = req.with("content-type", FORM.as_bytes());
    }
    req
}

/// An ACS3 request as alibabacloud-tea-openapi signs it: every header in
/// `signed` is signed (with the SDK's own ones), `unsigned` are added after.
pub(super) fn acs3_with(
    query: &[(String, String)],
    body: &[u8],
    signed: &[(&str, &str)],
    unsigned: &[(&str, &str)],
) -> Req {
    acs3_signing(query, body, signed, unsigned, None)
}

/// As [`acs3_with`], with the SDK's own header `leave_out` sent unsigned.
pub(super) fn acs3_signing(
    query: &[(String, String)],
    body: &[u8],
    signed: &[(&str, &str)],
    unsigned: &[(&str, &str)],
    leave_out: Option<&str>,
) -> Req {
    let payload = sha256_hex(body);
    let mut headers: Vec<(&str, &str)> = vec![
        ("host", "127.0.0.1:8080"),
        ("x-acs-action", "CreateCdnCertificateSigningRequest"),
        ("x-acs-version", "2018-05-10"),
        ("x-acs-date", "2026-11-22T12:00:00Z"),
        ("x-acs-signature-nonce", "nonce-1"),
        ("x-acs-content-sha256", &payload),
    ];
    headers.extend(signed);
    let mut unsigned = unsigned.to_vec();
    unsigned.extend(headers.iter().filter(|(n, _)| Some(*n) == leave_out));
    headers.retain(|(n, _)| Some(*n) != leave_out);
    // get_canonicalized_headers: lowercase names, sorted; a name's values
    // trimmed, sorted, joined with ",".
    let mut names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    let mut canonical_headers = String::new();
    for name in &names {
        let mut values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .collect();
        values.sort_unstable();
        canonical_headers += &format!("{name}:{}\n", values.join(","));
    }
    let names = names.join(";");
    let canonical = format!(
        "POST\n/\n{}\n{canonical_headers}\n{names}\n{payload}",
        sdk_query(query, false)
    );
    let signature = request_signing::acs3_signature("SECRET", &canonical);
    let auth =
        format!("ACS3-HMAC-SHA256 Credential=AKID,SignedHeaders={names},Signature={signature}");
    Req {
        method: "POST".into(),
        query: urlencode(query),
        headers: headers
            .iter()
            .chain(&unsigned)
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .chain([("authorization".to_owned(), auth.into_bytes())])
            .collect(),
        body: body.to_vec(),
    }
}

pub(super) fn acs3(query: &[(String, String)]) -> Req {
    acs3_with(query, b"", &[], &[])
}

pub(super) fn cn(value: &str) -> Vec<(String, String)> {
    owned(&[("CommonName", value)])
}

/// The common parameters of [`rpc`], without Signature.
pub(super) fn rpc_common() -> Vec<(String, String)> {
    let params = decode(rpc(&[], &[]).query.as_bytes()).unwrap();
    params
        .into_iter()
        .filter(|(k, _)| k != "Signature")
        .collect()
}
