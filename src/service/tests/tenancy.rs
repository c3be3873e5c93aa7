//! One mock token, several tenants, through the router: whose key a
//! certificate may join, which certificates are stored, quotas, and a
//! full token.

use axum::http::StatusCode;

use super::support::*;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/mock-certs/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

const LEAF: &str = include_str!("../../../tests/fixtures/mock-www.example.com.pem");

/// SetCdnDomainCSRCertificate for www.example.com with `cert`, by `key`.
fn attach_by(key: &str, cert: &str) -> Vec<(String, String)> {
    let call = with(
        with(
            with(
                without(common(), "CommonName"),
                "Action",
                "SetCdnDomainCSRCertificate",
            ),
            "DomainName",
            "www.example.com",
        ),
        "ServerCertificate",
        cert,
    );
    with(call, "AccessKeyId", key)
}

fn csr_by(key: &str) -> Vec<(String, String)> {
    with(common(), "AccessKeyId", key)
}

/// The error body less its RequestId.
fn without_request_id(mut body: serde_json::Value) -> serde_json::Value {
    body.as_object_mut().unwrap().remove("RequestId");
    body
}

#[tokio::test]
async fn another_tenants_key_is_answered_exactly_as_a_missing_one() {
    // The answer for a key that does not exist.
    let empty = service();
    let (status, missing, _) = send(&empty, signed(attach_by("OTHER", LEAF))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let svc = service();
    assert_eq!(send(&svc, signed(csr_by("AKID"))).await.0, StatusCode::OK);
    let (status, body, _) = send(&svc, signed(attach_by("OTHER", LEAF))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Code"], "Certificate.NoPrivateKey");
    assert_eq!(without_request_id(body), without_request_id(missing));
    assert!(svc.sessions().backend().certificates.is_empty());

    // The owner, and an access key granted hsm-csr:AllKeys, may.
    for key in ["AKID", "ADMIN"] {
        let (status, body, _) = send(&svc, signed(attach_by(key, LEAF))).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
    }
    assert_eq!(svc.sessions().backend().certificates.len(), 1);
}

#[tokio::test]
async fn keys_carry_their_callers_owner_and_a_star_grant_is_not_all_keys() {
    let svc = service();
    assert_eq!(send(&svc, signed(csr_by("OTHER"))).await.0, StatusCode::OK);
    let owner = svc.sessions().backend().owners[0].1.clone().unwrap();
    assert_eq!(owner.as_str(), "OTHER");
    // AKID has "*", which covers every action but not other tenants' keys.
    let (_, body, _) = send(&svc, signed(attach_by("AKID", LEAF))).await;
    assert_eq!(body["Code"], "Certificate.NoPrivateKey");
}

#[tokio::test]
async fn only_certificates_worth_storing_are_stored_each_refused_with_its_code() {
    let svc = service();
    assert_eq!(send(&svc, signed(csr_by("AKID"))).await.0, StatusCode::OK);
    for (file, code) in [
        ("expired.pem", "Certificate.Expired"),
        ("not-yet-valid.pem", "Certificate.NotYetValid"),
        ("ca.pem", "Certificate.IsCA"),
        ("client-only.pem", "Certificate.UsageMismatch"),
        ("bad-chain.pem", "Certificate.ChainInvalid"),
    ] {
        let (status, body, _) = send(&svc, signed(attach_by("AKID", &fixture(file)))).await;
        assert_eq!(
            (status, body["Code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{file}: {body}"
        );
    }
    assert!(svc.sessions().backend().certificates.is_empty());
    // Refused before a session is taken.
    assert_eq!(
        svc.sessions()
            .attach_calls
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let (status, _, _) = send(&svc, signed(attach_by("AKID", &fixture("good-chain.pem")))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_keeps_its_newest_certificates_and_never_one_twice() {
    let svc = service();
    assert_eq!(send(&svc, signed(csr_by("AKID"))).await.0, StatusCode::OK);
    let days: Vec<String> = (0..6).map(|i| fixture(&format!("day-{i}.pem"))).collect();
    // Newest first, then the older ones: at most 4 kept, the newest 4.
    for i in [5, 4, 3, 2] {
        let (status, body, _) = send(&svc, signed(attach_by("AKID", &days[i]))).await;
        assert_eq!(status, StatusCode::OK, "day {i}: {body}");
    }
    let (status, body, _) = send(&svc, signed(attach_by("AKID", &days[1]))).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Certificate.Outdated"))
    );
    // The same certificate again is answered OK and stored once.
    let (status, _, _) = send(&svc, signed(attach_by("AKID", &days[5]))).await;
    assert_eq!(status, StatusCode::OK);
    let stored = |svc: &std::sync::Arc<crate::service::Service<MockSessions>>| -> Vec<String> {
        let mut ders: Vec<String> = svc
            .sessions()
            .backend()
            .certificates
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.der.clone())))
            .collect();
        ders.sort();
        ders
    };
    let mut want: Vec<String> = days[2..].iter().map(|p| p.replace("\r\n", "\n")).collect();
    want.sort();
    let normalise = |v: Vec<String>| -> Vec<String> {
        v.into_iter().map(|p| p.replace("\r\n", "\n")).collect()
    };
    assert_eq!(normalise(stored(&svc)), want);
    // A newer one than all displaces the oldest (day 2).
    let svc2 = service();
    assert_eq!(send(&svc2, signed(csr_by("AKID"))).await.0, StatusCode::OK);
    for (i, day) in days.iter().enumerate() {
        let (status, _, _) = send(&svc2, signed(attach_by("AKID", day))).await;
        assert_eq!(status, StatusCode::OK, "day {i}");
    }
    assert_eq!(normalise(stored(&svc2)), want);
}

#[tokio::test]
async fn the_quota_refuses_before_keygen_and_a_retired_key_makes_room() {
    let svc = service();
    for _ in 0..2 {
        assert_eq!(send(&svc, signed(csr_by("QUOTA2"))).await.0, StatusCode::OK);
    }
    let (status, body, _) = send(&svc, signed(csr_by("QUOTA2"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Code"], "QuotaExceeded.Key");
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains("may own 2 key pairs"),
        "{body}"
    );
    assert_eq!(
        svc.sessions().backend().generated,
        2,
        "no keygen for the refused call"
    );
    // Other tenants are not held to it.
    assert_eq!(send(&svc, signed(csr_by("AKID"))).await.0, StatusCode::OK);
    // Its keys retired by keys prune's policy, through the same trait as
    // on a token: room again, as much as was retired.
    {
        let mut b = svc.sessions().backend();
        let policy = crate::retention::Policy {
            never_certified_after_days: Some(0),
            ..Default::default()
        };
        let owner = crate::owner::Owner::new("QUOTA2").unwrap();
        let prune = |b: &mut crate::backend::mock::MockBackend, act| {
            crate::retention::prune(b, &policy, "", Some(&owner), act, None, "R").unwrap()
        };
        let dry = prune(&mut b, false);
        assert_eq!(
            (dry.len(), b.live.len()),
            (2, 3),
            "a dry run removes nothing"
        );
        let done = prune(&mut b, true);
        assert!(done.iter().all(|p| p.removed == Some(Ok(()))));
        assert_eq!(b.live.len(), 1, "AKID's key stays");
    }
    for _ in 0..2 {
        assert_eq!(send(&svc, signed(csr_by("QUOTA2"))).await.0, StatusCode::OK);
    }
    assert_eq!(
        code_of(&svc, signed(csr_by("QUOTA2"))).await.1,
        "QuotaExceeded.Key"
    );
}

#[tokio::test]
async fn a_full_token_is_503_and_says_nothing_of_the_token() {
    let svc = service();
    svc.sessions().backend().full = true;
    let (status, body, _) = send(&svc, signed(csr_by("AKID"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["Code"], "ServiceUnavailable");
    let message = body["Message"].as_str().unwrap();
    assert!(
        !message.contains("CKR_") && !message.contains("mock"),
        "{message}"
    );
    assert_eq!(svc.sessions().backend().generated, 0);
}

#[tokio::test]
async fn metrics_show_quotas_and_refusals_by_configured_access_key_only() {
    let svc = service();
    for _ in 0..3 {
        send(&svc, signed(csr_by("QUOTA2"))).await;
    }
    // What GET /metrics does before it renders.
    svc.metrics.set_owners(svc.owner_stats());
    let text = svc.metrics.render(0, 1, None);
    for line in [
        "hsm_csr_owner_max_keys{owner=\"QUOTA2\"} 2",
        "hsm_csr_quota_refusals_total{owner=\"QUOTA2\"} 1",
        "hsm_csr_quota_refusals_total{owner=\"AKID\"} 0",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line}:\n{text}");
    }
    // The mock lists no owners by itself: only configured ids appear.
    assert!(!text.contains("owner=\"local\""), "{text}");
}
