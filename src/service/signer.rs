//! The caller's side of [`super::request_signing`]: a call signed as the
//! official SDKs sign it, for `hsm-csr call` and for library users who
//! call a service from Rust.
//!
//! - [`Scheme::Acs3`], as alibabacloud-tea-openapi sends it by default:
//!   `POST /?<parameters>` with an empty body and the headers `host`,
//!   `x-acs-action`, `x-acs-version`, `x-acs-date`, `x-acs-signature-nonce`
//!   and `x-acs-content-sha256`, all six signed, in
//!   `Authorization: ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`.
//! - [`Scheme::Rpc`], as aliyun-python-sdk-core sends it: `GET /?<parameters>`
//!   with `AccessKeyId`, `Action`, `Version`, `Format=JSON`,
//!   `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`,
//!   `SignatureNonce`, `Timestamp` and, last, `Signature`.
//!
//! Both are checked byte for byte against what the SDKs send for the same
//! inputs (`tests/fixtures/sdk-signatures.json`).

use super::request_signing::{
    acs3_canonical_request, acs3_signature, percent_encode, rpc_signature, rpc_string_to_sign,
    sha256_hex,
};

/// Which signature to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// ACS3-HMAC-SHA256 in the Authorization header (the new SDKs' default).
    #[default]
    Acs3,
    /// RPC SignatureVersion 1.0, HMAC-SHA1, in the query (the older SDKs).
    Rpc,
}

/// One call: what to ask, of which host, with which credentials.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call<'a> {
    /// `CreateCdnCertificateSigningRequest`, ...
    pub action: &'a str,
    /// The API version of the action (`2018-05-10`, ...).
    pub version: &'a str,
    /// The action's parameters, decoded (`CommonName`, `SANs`, ...).
    pub params: &'a [(String, String)],
    /// The `Host` header: `host[:port]` as the endpoint names it.
    pub host: &'a str,
    /// The access key id.
    pub access_key_id: &'a str,
    /// Its secret.
    pub secret: &'a str,
}

/// A signed request, ready to send: method, `/?query`, headers (lowercase
/// names; `host` among them) and an empty body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Signed {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// `/?name=value&...`, every name and value percent-encoded.
    pub path_and_query: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
}

/// `name=value&...`, each percent-encoded (RFC 3986).
fn query_string(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs `call` with `scheme`, using `nonce` (unique per call: a UUID) and
/// `timestamp` (`YYYY-MM-DDTHH:MM:SSZ`, now: see
/// [`super::request_signing::timestamp_now`]).
pub(crate) fn sign(scheme: Scheme, call: &Call<'_>, nonce: &str, timestamp: &str) -> Signed {
    match scheme {
        Scheme::Rpc => {
            let mut params: Vec<(String, String)> = [
                ("AccessKeyId", call.access_key_id),
                ("Action", call.action),
                ("Version", call.version),
                ("Format", "JSON"),
                ("SignatureMethod", "HMAC-SHA1"),
                ("SignatureVersion", "1.0"),
                ("SignatureNonce", nonce),
                ("Timestamp", timestamp),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
            params.extend(call.params.iter().cloned());
            let signature = rpc_signature(call.secret, &rpc_string_to_sign("GET", &params));
            params.push(("Signature".to_owned(), signature));
            Signed {
                method: "GET",
                path_and_query: format!("/?{}", query_string(&params)),
                headers: vec![("host".to_owned(), call.host.to_owned())],
            }
        }
        Scheme::Acs3 => {
            let payload = sha256_hex(b"");
            let signed_headers = [
                ("host", call.host),
                ("x-acs-action", call.action),
                ("x-acs-content-sha256", payload.as_str()),
                ("x-acs-date", timestamp),
                ("x-acs-signature-nonce", nonce),
                ("x-acs-version", call.version),
            ];
            let canonical =
                acs3_canonical_request("POST", "/", call.params, &signed_headers, &payload);
            let names = signed_headers.map(|(n, _)| n).join(";");
            let authorization = format!(
                "ACS3-HMAC-SHA256 Credential={},SignedHeaders={names},Signature={}",
                call.access_key_id,
                acs3_signature(call.secret, &canonical)
            );
            let mut headers: Vec<(String, String)> = signed_headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            headers.push(("authorization".to_owned(), authorization));
            Signed {
                method: "POST",
                path_and_query: format!("/?{}", query_string(call.params)),
                headers,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(nonce: &str) -> serde_json::Value {
        let cases: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../tests/fixtures/sdk-signatures.json")).unwrap();
        cases
            .into_iter()
            .find(|c| {
                c["params"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p[1] == nonce)
                    || c["headers"]
                        .as_array()
                        .is_some_and(|h| h.iter().any(|h| h[1] == nonce))
            })
            .unwrap()
    }

    fn pairs(v: &serde_json::Value) -> Vec<(String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
            .collect()
    }

    const COMMON: [&str; 8] = [
        "AccessKeyId",
        "Action",
        "Version",
        "Format",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
    ];

    /// aliyun-python-sdk-core's GET for the same call: same signature,
    /// same parameters.
    #[test]
    fn rpc_is_what_the_old_sdk_sends() {
        for nonce in ["rpc-0", "rpc-2"] {
            let case = fixture(nonce);
            let all = pairs(&case["params"]);
            let own: Vec<(String, String)> = all
                .iter()
                .filter(|(k, _)| !COMMON.contains(&k.as_str()))
                .cloned()
                .collect();
            let call = Call {
                action: "CreateCdnCertificateSigningRequest",
                version: "2018-05-10",
                params: &own,
                host: "127.0.0.1:8080",
                access_key_id: "AKID",
                secret: "SECRET",
            };
            let signed = sign(Scheme::Rpc, &call, nonce, "2026-11-22T12:00:00Z");
            assert_eq!(signed.method, "GET");
            let signature = format!(
                "Signature={}",
                percent_encode(case["signature"].as_str().unwrap())
            );
            assert!(
                signed.path_and_query.ends_with(&format!("&{signature}")),
                "{}",
                signed.path_and_query
            );
            let mut sent: Vec<&str> = signed.path_and_query[2..].split('&').collect();
            sent.retain(|p| !p.starts_with("Signature="));
            let mut expected: Vec<String> = all
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect();
            sent.sort_unstable();
            expected.sort_unstable();
            assert_eq!(sent, expected);
        }
    }

    /// alibabacloud-tea-openapi's POST for the same call: the same headers
    /// and the same Authorization.
    #[test]
    fn acs3_is_what_the_new_sdk_sends() {
        let case = fixture("acs3-0");
        let params = pairs(&case["params"]);
        let call = Call {
            action: "CreateCdnCertificateSigningRequest",
            version: "2018-05-10",
            params: &params,
            host: "127.0.0.1:8080",
            access_key_id: "AKID",
            secret: "SECRET",
        };
        let signed = sign(Scheme::Acs3, &call, "acs3-0", "2026-11-22T12:00:00Z");
        assert_eq!(signed.method, "POST");
        let mut expected = pairs(&case["headers"]);
        let mut got = signed.headers.clone();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(
            signed.path_and_query,
            format!("/?{}", query_string(&params))
        );
    }

    /// A name or value cannot add a parameter: `&` and `=` are sent encoded.
    #[test]
    fn values_stay_inside_their_parameter() {
        let params = vec![("CommonName".to_owned(), "a&Action=x=y".to_owned())];
        let call = Call {
            action: "CreateCdnCertificateSigningRequest",
            version: "2018-05-10",
            params: &params,
            host: "h",
            access_key_id: "AKID",
            secret: "SECRET",
        };
        for scheme in [Scheme::Rpc, Scheme::Acs3] {
            let signed = sign(scheme, &call, "n", "2026-11-22T12:00:00Z");
            assert!(
                signed
                    .path_and_query
                    .contains("CommonName=a%26Action%3Dx%3Dy"),
                "{}",
                signed.path_and_query
            );
        }
    }
}
