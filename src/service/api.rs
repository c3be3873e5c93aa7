//! The wire format of the cloud's RPC API: actions, response bodies in
//! JSON or XML, and every error as code, message and HTTP status. This is
//! the one place library errors become HTTP statuses.

use std::fmt::Write;

use serde::Serialize;

use crate::error::{Error, ErrorClass};
use crate::issue::CsrResponse;

/// The operations, with the API version and product each belongs to:
/// the two CSR calls, and their companions that attach the signed
/// certificate (`companion`).
pub(crate) const ACTIONS: [(&str, &str, &str); 4] = [
    ("CreateCdnCertificateSigningRequest", "2018-05-10", "cdn"),
    ("CreateDcdnCertificateSigningRequest", "2018-01-15", "dcdn"),
    ("SetCdnDomainCSRCertificate", "2018-05-10", "cdn"),
    ("SetDcdnDomainCSRCertificate", "2018-01-15", "dcdn"),
];

/// Errors of the protocol layer, with the cloud's codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// A required common parameter is absent.
    MissingParameter(&'static str),
    /// Signature parts missing or not in the expected form.
    IncompleteSignature,
    /// The signature does not match. For RPC signatures the message carries
    /// the server's StringToSign, as the cloud's does: aliyun-python-sdk-core
    /// compares it with its own and then reports InvalidAccessKeySecret.
    SignatureDoesNotMatch(Option<String>),
    /// Unknown access key id.
    InvalidAccessKeyId,
    /// Timestamp outside the accepted window.
    InvalidTimeStampExpired,
    /// Timestamp not `YYYY-MM-DDTHH:MM:SSZ`.
    InvalidTimeStampFormat,
    /// A SignatureNonce seen within the window.
    SignatureNonceUsed,
    /// No such action.
    InvalidActionNotFound,
    /// The action exists, the version does not.
    InvalidVersion,
    /// The access key may not call this action.
    Forbidden,
    /// Over the per-account rate; a call would be admitted again after
    /// this many milliseconds.
    Throttling {
        /// Time until the sliding window admits a call again.
        retry_after_ms: u64,
    },
    /// The request took longer than the configured timeout.
    Timeout,
    /// Body or headers over the limits.
    TooLarge,
    /// The body did not arrive within `body_timeout_ms`.
    RequestTimeout,
    /// A method other than GET or POST on the RPC endpoint.
    MethodNotAllowed,
    /// The token went away; the service is reconnecting.
    TokenUnavailable,
    /// The shared state (Redis) did not answer: the call is refused, its
    /// nonce unrecorded, no key made.
    SharedStateUnavailable,
    /// The token holds as many objects as `[token] max_objects` allows.
    TokenFull,
    /// A parameter given more than once (query, form body, or both); its
    /// name as [`super::auth::shown`] prints it.
    DuplicateParameter(String),
    /// A header hsm-csr reads or that is signed, given more than once; its
    /// name as [`super::auth::shown`] prints it.
    DuplicateHeader(String),
    /// An ACS3 request with a body whose `content-type` is not signed.
    UnsignedContentType,
    /// A parameter or header that is not UTF-8 once percent-decoded; its
    /// name as [`super::auth::shown`] prints it.
    NotUtf8(String),
    /// An STS security token, which hsm-csr cannot check.
    SecurityTokenUnsupported,
    /// An error from the library (validation, token, ...).
    Issue {
        /// API code.
        code: &'static str,
        /// Message.
        message: String,
        /// HTTP status.
        status: u16,
    },
}

impl ApiError {
    /// (HTTP status, code, message).
    pub(crate) fn parts(&self) -> (u16, &'static str, String) {
        match self {
            ApiError::MissingParameter(p) => (
                400,
                "MissingParameter",
                format!("The input parameter \"{p}\" that is mandatory for processing this request is not supplied."),
            ),
            ApiError::IncompleteSignature => (400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.".into()),
            ApiError::SignatureDoesNotMatch(sts) => (
                400,
                "SignatureDoesNotMatch",
                match sts {
                    Some(sts) => format!("Specified signature is not matched with our calculation. server string to sign is:{sts}"),
                    None => "Specified signature is not matched with our calculation.".into(),
                },
            ),
            ApiError::InvalidAccessKeyId => (404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.".into()),
            ApiError::InvalidTimeStampExpired => (400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.".into()),
            ApiError::InvalidTimeStampFormat => (400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.".into()),
            ApiError::SignatureNonceUsed => (400, "SignatureNonceUsed", "Specified signature nonce was used already.".into()),
            ApiError::InvalidActionNotFound => (404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.".into()),
            ApiError::InvalidVersion => (400, "InvalidVersion", "Specified parameter Version is not valid.".into()),
            ApiError::Forbidden => (
                403,
                "Forbidden.RAM",
                "User not authorized to operate on the specified resource, or this API doesn't support RAM.".into(),
            ),
            ApiError::Throttling { .. } => (400, "Throttling.User", "Request was denied due to user flow control.".into()),
            ApiError::Timeout => (503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server: it timed out, and no key was kept.".into()),
            ApiError::TooLarge => (413, "RequestTooLarge", "The request body or headers are larger than allowed.".into()),
            ApiError::RequestTimeout => (408, "RequestTimeout", "The request body did not arrive in time; the connection is closed.".into()),
            ApiError::MethodNotAllowed => (405, "MethodNotAllowed", "The specified method is not allowed against this resource: use GET or POST.".into()),
            ApiError::TokenUnavailable => (
                503,
                "ServiceUnavailable",
                "The key store is unreachable; the service is reconnecting. Try again later.".into(),
            ),
            ApiError::TokenFull => (
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server: the key store has no room for new objects, and no key was made. Try again later.".into(),
            ),
            ApiError::SharedStateUnavailable => (
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server: the shared state (rate limits and nonces) is unreachable, and no key was made. Try again later.".into(),
            ),
            ApiError::DuplicateParameter(p) => (
                400,
                "InvalidParameter",
                format!("The parameter \"{p}\" is given more than once (in the query, the form body, or both); give it once."),
            ),
            ApiError::DuplicateHeader(h) => (
                400,
                "InvalidParameter",
                format!("The header \"{h}\" is given more than once; give it once."),
            ),
            ApiError::UnsignedContentType => (
                400,
                "IncompleteSignature",
                "The request has a body, but \"content-type\" is not in SignedHeaders; sign it.".into(),
            ),
            ApiError::NotUtf8(p) => (
                400,
                "InvalidValue.Malformed",
                format!("\"{p}\" is not valid UTF-8 once percent-decoded."),
            ),
            ApiError::SecurityTokenUnsupported => (
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey: hsm-csr accepts no STS security token; \
                 sign with a configured access key and send neither x-acs-security-token nor SecurityToken."
                    .into(),
            ),
            ApiError::Issue { code, message, status } => (*status, code, message.clone()),
        }
    }
}

/// HTTP status of a library error: the API's 400 for bad requests, 500 for
/// everything the caller cannot fix (the token's state is the operator's
/// business, and its details stay in the server log).
pub(crate) fn http_status(e: &Error) -> u16 {
    match e.class() {
        ErrorClass::Request => 400,
        ErrorClass::Token | ErrorClass::Internal => 500,
    }
}

impl From<&Error> for ApiError {
    fn from(e: &Error) -> Self {
        // The operator's limit, not a fault: the caller may retry later,
        // and hears nothing of the token.
        if matches!(e, Error::TokenFull { .. }) {
            return ApiError::TokenFull;
        }
        if matches!(e, Error::LeaseNotHeld) {
            return ApiError::SharedStateUnavailable;
        }
        let (code, message) = match e.class() {
            ErrorClass::Request | ErrorClass::Internal => (e.code(), e.public_message()),
            // A caller cannot fix the token: it gets the API's generic 500.
            ErrorClass::Token => (
                "Internal.Error",
                "The request processing has failed due to backend service exception.".to_owned(),
            ),
        };
        ApiError::Issue {
            code,
            message,
            status: http_status(e),
        }
    }
}

impl From<super::limits::Refusal> for ApiError {
    fn from(r: super::limits::Refusal) -> Self {
        use super::limits::Refusal;
        match r {
            Refusal::Throttled(wait) => ApiError::Throttling {
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            },
            Refusal::NonceUsed => ApiError::SignatureNonceUsed,
            Refusal::Unreachable => ApiError::SharedStateUnavailable,
        }
    }
}

/// The error body: RequestId, HostId, Code, Message, Recommend.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    request_id: &'a str,
    host_id: &'a str,
    code: &'a str,
    message: &'a str,
    recommend: &'a str,
}

/// A rendered response: status, content type, body.
pub(crate) struct Rendered {
    /// HTTP status.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml(root: &str, fields: &[(&str, &str)]) -> String {
    let mut out = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><{root}>");
    for (k, v) in fields {
        let _ = write!(out, "<{k}>{}</{k}>", xml_escape(v));
    }
    let _ = write!(out, "</{root}>");
    out
}

/// The body of a successful response: the cloud's four fields, and
/// `KeyUri` when the service is configured to disclose it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SuccessBody<'a> {
    request_id: &'a str,
    pub_md5: &'a str,
    csr: &'a str,
    common_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_uri: Option<&'a str>,
}

/// Renders a successful response for `action` in `format`; `KeyUri` (the
/// token's label and serial and the key's CKA_ID) only `with_key_uri`.
pub(crate) fn success(action: &str, format: &str, r: &CsrResponse, with_key_uri: bool) -> Rendered {
    let body = SuccessBody {
        request_id: &r.request_id,
        pub_md5: &r.pub_md5,
        csr: &r.csr,
        common_name: &r.common_name,
        key_uri: with_key_uri.then_some(r.key_uri.as_str()),
    };
    if format == "XML" {
        let mut fields = vec![
            ("RequestId", body.request_id),
            ("PubMd5", body.pub_md5),
            ("Csr", body.csr),
            ("CommonName", body.common_name),
        ];
        fields.extend(body.key_uri.map(|u| ("KeyUri", u)));
        return Rendered {
            status: 200,
            content_type: "text/xml;charset=utf-8",
            body: xml(&format!("{action}Response"), &fields),
        };
    }
    Rendered {
        status: 200,
        content_type: "application/json;charset=utf-8",
        body: serde_json::to_string(&body).unwrap_or_default(),
    }
}

/// Renders the answer of a companion call: only its `RequestId`, as the
/// cloud's.
pub(crate) fn attached(action: &str, format: &str, request_id: &str) -> Rendered {
    if format == "XML" {
        return Rendered {
            status: 200,
            content_type: "text/xml;charset=utf-8",
            body: xml(&format!("{action}Response"), &[("RequestId", request_id)]),
        };
    }
    Rendered {
        status: 200,
        content_type: "application/json;charset=utf-8",
        body: serde_json::json!({ "RequestId": request_id }).to_string(),
    }
}

/// Renders an error in `format`.
pub(crate) fn error(format: &str, request_id: &str, host_id: &str, e: &ApiError) -> Rendered {
    let (status, code, message) = e.parts();
    let recommend = "";
    if format == "XML" {
        return Rendered {
            status,
            content_type: "text/xml;charset=utf-8",
            body: xml(
                "Error",
                &[
                    ("RequestId", request_id),
                    ("HostId", host_id),
                    ("Code", code),
                    ("Message", &message),
                    ("Recommend", recommend),
                ],
            ),
        };
    }
    let body = ErrorBody {
        request_id,
        host_id,
        code,
        message: &message,
        recommend,
    };
    Rendered {
        status,
        content_type: "application/json;charset=utf-8",
        body: serde_json::to_string(&body).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_the_api_statuses() {
        let e = Error::Malformed("Country must be 2 characters.".into());
        assert_eq!(
            ApiError::from(&e).parts(),
            (
                400,
                "InvalidValue.Malformed",
                "Country must be 2 characters.".into()
            )
        );
        let e = Error::KeyGen("x".into());
        assert_eq!(ApiError::from(&e).parts().0, 500);
        assert_eq!(ApiError::from(&e).parts().1, "Internal.KeyError");
        let e = Error::PinIncorrect {
            token: "t".into(),
            pin_source: None,
        };
        assert_eq!(
            ApiError::from(&e).parts().1,
            "Internal.Error",
            "token details stay server-side"
        );
    }

    #[test]
    fn refusals_map_to_the_api_codes() {
        use crate::service::limits::Refusal;
        use std::time::Duration;
        let (status, code, message) = ApiError::from(Refusal::Unreachable).parts();
        assert_eq!((status, code), (503, "ServiceUnavailable"));
        assert!(message.contains("shared state") && message.contains("no key was made"));
        assert_eq!(
            ApiError::from(Refusal::NonceUsed),
            ApiError::SignatureNonceUsed
        );
        assert_eq!(
            ApiError::from(Refusal::Throttled(Duration::from_micros(1500))),
            ApiError::Throttling { retry_after_ms: 1 }
        );
    }

    #[test]
    fn key_uri_only_when_asked() {
        let r = CsrResponse {
            request_id: "R".into(),
            pub_md5: "m".into(),
            csr: "c".into(),
            common_name: "n".into(),
            key_uri: "pkcs11:token=t;id=%01".into(),
        };
        let a = "CreateCdnCertificateSigningRequest";
        for format in ["JSON", "XML"] {
            assert!(!success(a, format, &r, false).body.contains("KeyUri"));
            assert!(success(a, format, &r, true).body.contains("pkcs11:token=t"));
        }
        assert_eq!(
            success(a, "JSON", &r, false).body,
            r#"{"RequestId":"R","PubMd5":"m","Csr":"c","CommonName":"n"}"#
        );
    }

    #[test]
    fn a_companion_answers_only_its_request_id() {
        let a = "SetCdnDomainCSRCertificate";
        assert_eq!(attached(a, "JSON", "R").body, r#"{"RequestId":"R"}"#);
        assert_eq!(
            attached(a, "XML", "R").body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><SetCdnDomainCSRCertificateResponse>\
             <RequestId>R</RequestId></SetCdnDomainCSRCertificateResponse>"
        );
    }

    #[test]
    fn xml_is_escaped() {
        let r = error(
            "XML",
            "R",
            "h",
            &ApiError::Issue {
                code: "X",
                message: "<&>".into(),
                status: 400,
            },
        );
        assert!(
            r.body.contains("<Message>&lt;&amp;&gt;</Message>"),
            "{}",
            r.body
        );
        assert!(r.body.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><RequestId>R</RequestId>"
        ));
    }
}
