use super::*;
use crate::algorithm::KeyType;
use crate::backend::mock::MockBackend;

/// The example request with the default options, as request "ID".
pub(super) fn issue(b: &mut MockBackend, audit: Option<Trail<'_>>) -> Result<CsrResponse> {
    issue_csr(
        b,
        &ValidRequest::example(),
        &ValidKeyOptions::default(),
        "ID".into(),
        audit,
    )
}

/// [`issue`]'s call, prepared and not yet kept.
pub(super) fn prepare<'b>(
    b: &'b mut MockBackend,
    audit: Option<Trail<'b>>,
) -> Result<PendingCsr<'b>> {
    prepare_csr(
        b,
        &ValidRequest::example(),
        &ValidKeyOptions::default(),
        "ID".into(),
        audit,
    )
}

#[test]
fn success_keeps_the_key_and_fills_the_response() {
    let mut b = MockBackend::default();
    let r = issue(&mut b, None).unwrap();
    assert_eq!(b.live.len(), 1);
    assert_eq!(r.request_id, "ID");
    assert_eq!(r.common_name, "example.com");
    assert_eq!(r.pub_md5, fingerprint::pub_md5(crate::backend::mock::SPKI));
    assert_eq!(r.key_uri, "pkcs11:object=hsm-csr:example.com");
    assert!(r.csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    let json = serde_json::to_value(&r).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 5);
    for k in ["RequestId", "PubMd5", "Csr", "CommonName", "KeyUri"] {
        assert!(keys.contains(&k), "{k}");
    }
}

#[test]
fn sign_failure_rolls_back() {
    let mut b = MockBackend {
        fail_sign: true,
        ..Default::default()
    };
    let e = issue(&mut b, None).unwrap_err();
    assert_eq!(e.code(), "Internal.CreateCSRError");
    assert_eq!(b.generated, 1);
    assert!(b.live.is_empty());
}

#[test]
fn a_signature_that_does_not_verify_rolls_back() {
    let mut b = MockBackend {
        corrupt_signature: true,
        ..Default::default()
    };
    let e = issue(&mut b, None).unwrap_err();
    assert_eq!(e.code(), "Internal.CreateCSRError");
    assert!(e.to_string().contains("does not verify"), "{e}");
    assert!(b.live.is_empty());
}

#[test]
fn failed_rollback_keeps_the_first_code_and_names_the_key() {
    let mut b = MockBackend {
        fail_sign: true,
        fail_destroy: true,
        ..Default::default()
    };
    let e = issue(&mut b, None).unwrap_err();
    assert_eq!(e.code(), "Internal.CreateCSRError");
    assert!(
        e.to_string().contains("pkcs11:object=hsm-csr:example.com"),
        "{e}"
    );
}

#[test]
fn undelivered_response_rolls_back() {
    let mut b = MockBackend::default();
    let pending = prepare(&mut b, None).unwrap();
    drop(pending);
    assert!(b.live.is_empty());
    let pending = prepare(&mut b, None).unwrap();
    pending.rollback().unwrap();
    assert!(b.live.is_empty());
    assert_eq!(b.generated, 2);
}

#[test]
fn delivered_keys_are_forgotten_so_a_session_holds_only_requests_in_flight() {
    let mut b = MockBackend::default();
    for i in 0..100 {
        issue_csr(
            &mut b,
            &ValidRequest::example(),
            &ValidKeyOptions::default(),
            format!("ID{i}"),
            None,
        )
        .unwrap();
        assert!(b.tracked.is_empty(), "after CSR {i}: {:?}", b.tracked);
    }
    assert_eq!(b.live.len(), 100, "every delivered key stays on the token");

    let pending = prepare(&mut b, None).unwrap();
    drop(pending);
    let pending = prepare(&mut b, None).unwrap();
    pending.rollback().unwrap();
    assert!(b.tracked.is_empty());
    assert_eq!(b.live.len(), 100);
}

#[test]
fn bad_key_size_is_refused_before_keygen() {
    let mut b = MockBackend::default();
    let opts = KeyOptions {
        key_type: KeyType::Rsa { bits: 1024 },
        ..Default::default()
    };
    let e = opts
        .validate()
        .and_then(|opts| issue_csr(&mut b, &ValidRequest::example(), &opts, "ID".into(), None))
        .unwrap_err();
    assert_eq!(e.code(), "Config.Invalid");
    assert_eq!(b.generated, 0);
}

#[test]
fn request_ids_are_uppercase_uuids() {
    let id = new_request_id();
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_uppercase());
    assert!(uuid::Uuid::parse_str(&id).is_ok());
}
