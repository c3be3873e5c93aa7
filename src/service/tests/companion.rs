//! SetCdnDomainCSRCertificate / SetDcdnDomainCSRCertificate through the
//! router, on the mock: every answer by code, and which reach the token.

use std::sync::atomic::Ordering;

use axum::http::StatusCode;

use super::support::*;

const LEAF: &str = include_str!("../../../tests/fixtures/mock-www.example.com.pem");

/// A companion call by AKID for `domain` with `cert` (each left out when None).
fn set_call(action: &str, domain: Option<&str>, cert: Option<&str>) -> Vec<(String, String)> {
    let version = if action.starts_with("SetCdn") {
        "2018-05-10"
    } else {
        "2018-01-15"
    };
    let mut params = with(
        with(without(common(), "CommonName"), "Action", action),
        "Version",
        version,
    );
    if let Some(d) = domain {
        params = with(params, "DomainName", d);
    }
    if let Some(c) = cert {
        params = with(params, "ServerCertificate", c);
    }
    params
}

fn cdn(domain: &str, cert: &str) -> Vec<(String, String)> {
    set_call("SetCdnDomainCSRCertificate", Some(domain), Some(cert))
}

#[tokio::test]
async fn the_certificate_is_stored_once_and_the_answer_is_its_request_id() {
    let svc = service();
    // The key it was issued for: the mock makes every key with one SPKI.
    assert_eq!(send(&svc, signed(common())).await.0, StatusCode::OK);
    for action in ["SetCdnDomainCSRCertificate", "SetDcdnDomainCSRCertificate"] {
        let call = set_call(action, Some("www.example.com"), Some(LEAF));
        let (status, body, head) = send(&svc, signed(call)).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        let id = body["RequestId"].as_str().unwrap();
        assert_eq!(head.headers()["x-acs-request-id"], id);
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }
    assert_eq!(svc.sessions().backend().certificates.len(), 1);

    let xml = with(cdn("www.example.com", LEAF), "Format", "XML");
    let (status, _, head) = send(&svc, signed(xml)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        head.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("xml")
    );

    let text = svc.metrics.render(0, 1, None);
    for action in ["SetCdnDomainCSRCertificate", "SetDcdnDomainCSRCertificate"] {
        let line = format!("hsm_csr_requests_total{{action=\"{action}\",code=\"OK\"}}");
        assert!(text.contains(&line), "{text}");
    }
}

#[tokio::test]
async fn each_certificate_error_has_its_code_and_none_but_no_key_reaches_the_token() {
    let svc = service();
    let csr = send(&svc, signed(common())).await.1["Csr"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases = [
        (cdn("www.example.com", ""), "Certificate.MissingParameter"),
        (
            set_call("SetCdnDomainCSRCertificate", Some("www.example.com"), None),
            "Certificate.MissingParameter",
        ),
        (
            set_call("SetCdnDomainCSRCertificate", None, Some(LEAF)),
            "MissingParameter",
        ),
        (
            cdn("www.example.com", "not a certificate"),
            "Certificate.DecodeError",
        ),
        (cdn("www.example.com", &csr), "Certificate.FormatError"),
        (cdn("other.example.com", LEAF), "Certificate.MissMatch"),
        (cdn("example.com", LEAF), "Certificate.MissMatch"),
        (cdn("bad domain\n", LEAF), "InvalidValue.Malformed"),
    ];
    for (params, want) in cases {
        let (status, code) = code_of(&svc, signed(params)).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, want));
    }
    assert_eq!(svc.sessions().attach_calls.load(Ordering::Relaxed), 0);
    assert!(svc.sessions().backend().certificates.is_empty());
}

#[tokio::test]
async fn no_key_for_the_certificate() {
    let svc = service();
    let (status, body, _) = send(&svc, signed(cdn("www.example.com", LEAF))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Code"], "Certificate.NoPrivateKey");
    let message = body["Message"].as_str().unwrap();
    assert!(
        message.starts_with("The private key of the certificate does not exist.")
            && !message.contains("mock"),
        "the token's label stays server-side: {message}"
    );
}

#[tokio::test]
async fn grants_version_and_rate_apply_as_to_the_csr_calls() {
    let svc = service();
    for (key, want) in [("NOGRANT", "Forbidden.RAM"), ("CSRONLY", "Forbidden.RAM")] {
        let call = with(cdn("www.example.com", LEAF), "AccessKeyId", key);
        assert_eq!(code_of(&svc, signed(call)).await.1, want, "{key}");
    }
    let call = with(cdn("www.example.com", LEAF), "Version", "2018-01-15");
    assert_eq!(code_of(&svc, signed(call)).await.1, "InvalidVersion");
    assert_eq!(svc.sessions().attach_calls.load(Ordering::Relaxed), 0);

    let config = crate::service::ServiceConfig {
        rate_limit: 1,
        ..Default::default()
    };
    let svc = service_with(MockSessions::default(), config);
    assert_eq!(send(&svc, signed(common())).await.0, StatusCode::OK);
    let call = cdn("www.example.com", LEAF);
    assert_eq!(code_of(&svc, signed(call)).await.1, "Throttling.User");
}
