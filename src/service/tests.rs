//! The router, driven in-process on the mock backend: every answer it can
//! give, by code, without a token or a socket.

mod audit;
mod companion;
mod support;
mod tenancy;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::ServiceConfig;
use support::*;

#[tokio::test]
async fn a_signed_call_gets_a_csr_and_its_key_is_kept() {
    let svc = service();
    let (status, body, head) = send(&svc, signed(common())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["CommonName"], "www.example.com");
    assert!(
        body["Csr"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    );
    assert_eq!(
        body.get("KeyUri"),
        None,
        "KeyUri only with [service] key_uri = true"
    );
    assert_eq!(
        head.headers()["x-acs-request-id"],
        body["RequestId"].as_str().unwrap()
    );
    let backend = svc.sessions().backend();
    assert_eq!((backend.live.len(), backend.tracked.len()), (1, 0));
}

#[allow(
    clippy::too_many_lines,
    reason = "one table of refused requests and their codes"
)]
#[tokio::test]
async fn every_refusal_before_the_token_has_its_code() {
    let svc = service();
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "no AccessKeyId",
            signed(without(common(), "AccessKeyId")),
            StatusCode::BAD_REQUEST,
            "MissingParameter",
        ),
        (
            "no Signature",
            get(&query_of(&common())),
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
        ),
        (
            "another SignatureMethod",
            signed(with(common(), "SignatureMethod", "HMAC-SHA256")),
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
        ),
        (
            "wrong secret",
            signed_with("WRONG", common()),
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
        ),
        (
            "unknown key",
            signed(with(common(), "AccessKeyId", "NOBODY")),
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
        ),
        (
            "old timestamp",
            signed(with(common(), "Timestamp", "2001-01-01T00:00:00Z")),
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
        ),
        (
            "bad timestamp",
            signed(with(common(), "Timestamp", "yesterday")),
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Format",
        ),
        (
            "unknown action",
            signed(with(common(), "Action", "DeleteEverything")),
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
        ),
        (
            "wrong version",
            signed(with(common(), "Version", "2014-11-11")),
            StatusCode::BAD_REQUEST,
            "InvalidVersion",
        ),
        (
            "not granted",
            signed(with(common(), "AccessKeyId", "NOGRANT")),
            StatusCode::FORBIDDEN,
            "Forbidden.RAM",
        ),
        (
            "parameter twice",
            get(&format!("{}&CommonName=b.example", query_of(&common()))),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            "STS token",
            signed(with(common(), "SecurityToken", "sts")),
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.MismatchWithAccessKey",
        ),
        (
            "not UTF-8",
            get(&format!(
                "{}&CommonName=%FF",
                query_of(&without(common(), "CommonName"))
            )),
            StatusCode::BAD_REQUEST,
            "InvalidValue.Malformed",
        ),
        (
            "no CommonName",
            signed(without(common(), "CommonName")),
            StatusCode::BAD_REQUEST,
            "MissingCommonName",
        ),
        (
            "bad Country",
            signed(with(common(), "Country", "China")),
            StatusCode::BAD_REQUEST,
            "InvalidValue.Malformed",
        ),
    ];
    for (what, request, status, code) in cases {
        assert_eq!(
            code_of(&svc, request).await,
            (status, code.to_owned()),
            "{what}"
        );
    }
    let header_twice = Request::get(format!("/?{}", query_of(&common())))
        .header("authorization", "ACS3-HMAC-SHA256 Credential=AKID")
        .header("authorization", "ACS3-HMAC-SHA256 Credential=AKID")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        code_of(&svc, header_twice).await,
        (StatusCode::BAD_REQUEST, "InvalidParameter".to_owned())
    );
    // ACS3: a signature must cover the headers that say what is asked,
    // and a body's content-type; both are checked before the signature.
    let acs3 = |signed: &str, body: &'static str| {
        Request::post("/")
            .header(
                "authorization",
                format!("ACS3-HMAC-SHA256 Credential=AKID,SignedHeaders={signed},Signature=00"),
            )
            .body(Body::from(body))
            .unwrap()
    };
    let all =
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";
    for (what, request) in [
        ("x-acs-action unsigned", acs3("host", "")),
        ("content-type unsigned", acs3(all, "CommonName=a.example")),
    ] {
        let (status, body, _) = send(&svc, request).await;
        assert_eq!(
            (status, body["Code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("IncompleteSignature")),
            "{what}"
        );
        if what == "content-type unsigned" {
            assert!(
                body["Message"].as_str().unwrap().contains("content-type"),
                "{body}"
            );
        }
    }
    let sts_header = Request::get("/")
        .header("x-acs-security-token", "sts")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        code_of(&svc, sts_header).await,
        (
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.MismatchWithAccessKey".to_owned()
        )
    );
    assert_eq!(
        svc.sessions().backend().generated,
        0,
        "no key for a refused call"
    );
}

#[tokio::test]
async fn a_nonce_is_used_once() {
    let svc = service();
    let params = common();
    assert_eq!(
        code_of(&svc, signed(params.clone())).await.0,
        StatusCode::OK
    );
    assert_eq!(
        code_of(&svc, signed(params)).await,
        (StatusCode::BAD_REQUEST, "SignatureNonceUsed".to_owned())
    );
    assert_eq!(svc.sessions().backend().live.len(), 1);
}

#[tokio::test]
async fn a_caller_over_its_rate_is_throttled_with_retry_after() {
    let config = ServiceConfig {
        rate_limit: 1,
        ..ServiceConfig::default()
    };
    let svc = service_with(MockSessions::default(), config);
    // Several calls in a row: at least one falls in the same second as the
    // one before, whatever the machine's speed.
    for _ in 0..5 {
        let (status, body, head) = send(&svc, signed(common())).await;
        if body["Code"] == "Throttling.User" {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(head.headers().contains_key("x-acs-retry-after"));
            assert!(head.headers().contains_key("retry-after"));
            return;
        }
    }
    panic!("five calls at a rate of one a second, none throttled");
}

#[tokio::test]
async fn limits_on_the_request_itself() {
    let config = ServiceConfig {
        max_body_bytes: 1024,
        max_header_bytes: 1024,
        body_timeout_ms: 100,
        ..ServiceConfig::default()
    };
    let svc = service_with(MockSessions::default(), config);
    let big_body = Request::post("/")
        .body(Body::from(vec![b'a'; 2048]))
        .unwrap();
    assert_eq!(
        code_of(&svc, big_body).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLarge".to_owned())
    );
    let big_header = Request::get("/")
        .header("x-padding", "a".repeat(2048))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        code_of(&svc, big_header).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLarge".to_owned())
    );
    let stalled = Request::post("/").body(Body::new(Stalled)).unwrap();
    let (status, body, head) = send(&svc, stalled).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (StatusCode::REQUEST_TIMEOUT, Some("RequestTimeout"))
    );
    assert_eq!(head.headers()["connection"], "close");
    let put = Request::put("/").body(Body::empty()).unwrap();
    let (status, body, head) = send(&svc, put).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("MethodNotAllowed"))
    );
    assert_eq!(head.headers()["allow"], "GET, POST");
}

#[tokio::test]
async fn a_token_that_went_away_is_service_unavailable() {
    let broken = MockSessions::default();
    broken.broken.store(true, Ordering::Relaxed);
    let svc = service_with(broken, ServiceConfig::default());
    let (status, body, _) = send(&svc, signed(common())).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("ServiceUnavailable"))
    );
    assert!(
        body["Message"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );
    let health = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_eq!(send(&svc, health).await.0, StatusCode::SERVICE_UNAVAILABLE);

    let reopening = MockSessions::default();
    reopening.none_idle.store(true, Ordering::Relaxed);
    let svc = service_with(reopening, ServiceConfig::default());
    assert_eq!(
        code_of(&svc, signed(common())).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable".to_owned()
        )
    );
}

#[tokio::test]
async fn a_request_past_its_timeout_keeps_no_key() {
    let slow = MockSessions {
        keygen_time: Duration::from_millis(300),
        ..MockSessions::default()
    };
    let config = ServiceConfig {
        request_timeout_ms: 1,
        ..ServiceConfig::default()
    };
    let svc = service_with(slow, config);
    let (status, body, _) = send(&svc, signed(common())).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("ServiceUnavailable"))
    );
    assert!(
        body["Message"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
    // The worker finishes later, finds nobody waiting, and removes the key.
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.sessions().backend().generated == 0 || !svc.sessions().backend().live.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the undelivered key pair was not removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failing_token_is_an_internal_error_and_leaves_no_key() {
    let failing = MockSessions::default();
    failing.backend().fail_sign = true;
    let svc = service_with(failing, ServiceConfig::default());
    let (status, body, _) = send(&svc, signed(common())).await;
    assert_eq!(
        (status, body["Code"].as_str(), body["Message"].as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("Internal.CreateCSRError"),
            // The backend's own words ("mock: sign refused") stay in the log.
            Some("Failed to create CSR.")
        )
    );
    let backend = svc.sessions().backend();
    assert_eq!((backend.generated, backend.live.len()), (1, 0));
}

#[tokio::test]
async fn health_and_metrics() {
    let svc = service();
    let (status, body, head) =
        send(&svc, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["LoggedIn"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert!(head.headers().contains_key("x-acs-request-id"));
    send(&svc, signed(common())).await;
    let (status, _, _) = send(&svc, signed(with(common(), "AccessKeyId", "NOGRANT"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let router = TowerToHyperService::new(Arc::clone(&svc).router());
    let response = router
        .call(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("code=\"OK\""), "{text}");
    assert!(text.contains("code=\"Forbidden.RAM\""), "{text}");
    // prometheus-client ends a registered metric's help with a period of
    // its own; the collectors' texts carry theirs.
    let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
    assert!(helps.len() >= 6, "{text}");
    for help in helps {
        assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
    }
}

#[tokio::test]
async fn token_failures_are_internal_errors_that_name_no_token() {
    let failing = MockSessions {
        device_error: true,
        ..MockSessions::default()
    };
    let svc = service_with(failing, ServiceConfig::default());
    let (status, body, _) = send(&svc, signed(common())).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("Internal.Error"))
    );
    // Neither the token's name nor a PKCS#11 return value reaches a caller.
    let text = body.to_string();
    let leaked = ["mock-token-label", "CKR_DEVICE_ERROR", "C_GenerateKeyPair"];
    assert!(!leaked.iter().any(|l| text.contains(l)), "{text}");

    // A failed keygen is Internal.KeyError with the API's message alone:
    // the PKCS#11 function and return value stay in the log.
    let keygen_fails = MockSessions::default();
    keygen_fails.backend().lose_session_on_generate = 1;
    let svc = service_with(keygen_fails, ServiceConfig::default());
    let (status, body, _) = send(&svc, signed(common())).await;
    assert_eq!(
        (status, body["Code"].as_str(), body["Message"].as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("Internal.KeyError"),
            Some("Failed to generate rsa key.")
        )
    );
}

/// A call the token went away under says so (503, reconnecting), so that
/// the caller retries, on another token if there is one; the next call is
/// not given to that token.
#[tokio::test]
async fn a_call_the_token_went_away_under_is_service_unavailable() {
    let going = MockSessions {
        device_error: true,
        gone_on_error: true,
        ..MockSessions::default()
    };
    let svc = service_over(
        vec![going, MockSessions::default()],
        ServiceConfig::default(),
    );
    let (status, body, _) = send(&svc, signed(common())).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("ServiceUnavailable"))
    );
    assert!(
        body["Message"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );
    for _ in 0..3 {
        let (status, body, _) = send(&svc, signed(common())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body, _) = send(&svc, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // (The mock answers health as reachable but logged out once gone.)
    assert_eq!(body["LoggedIn"], true);
    assert_eq!(body["Tokens"][0]["Label"], "t0");
    assert_eq!(body["Tokens"][0]["LoggedIn"], false);
    assert_eq!(body["Tokens"][1]["LoggedIn"], true);
}
