//! The audit trail of [`super::prepare_csr`]: every key made has
//! its events, and a key whose event cannot be written is removed.

use super::tests::{issue, prepare};
use super::*;
use crate::audit::{Actor, AuditLog};
use crate::backend::mock::MockBackend;

fn trail(log: &AuditLog) -> Option<Trail<'_>> {
    Some(Trail {
        log,
        actor: Actor::access_key("AK"),
    })
}

fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds(path: &std::path::Path) -> Vec<String> {
    events(path)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    (dir, path, log)
}

/// Makes the log unwritable: a directory where the file was.
fn break_log(path: &std::path::Path) {
    std::fs::remove_file(path).unwrap();
    std::fs::create_dir(path).unwrap();
}

#[test]
fn a_delivered_key_has_created_then_delivered() {
    let (_dir, path, log) = setup();
    let mut b = MockBackend::default();
    let r = issue(&mut b, trail(&log)).unwrap();
    assert_eq!(kinds(&path), ["created", "delivered"]);
    for e in events(&path) {
        assert_eq!(e["request_id"], "ID");
        assert_eq!(e["actor"]["access_key"], "AK");
        assert_eq!(e["pub_md5"], r.pub_md5.as_str());
        assert_eq!(e["key_uri"], r.key_uri.as_str());
        assert_eq!(e["common_name"], "example.com");
        assert_eq!(e["outcome"], "ok");
        assert!(e.get("csr").is_none() && !e.to_string().contains("BEGIN"));
    }
    assert_eq!(b.live.len(), 1);
}

#[test]
fn a_failed_request_records_its_rollback() {
    let (_dir, path, log) = setup();
    let mut b = MockBackend {
        fail_sign: true,
        ..Default::default()
    };
    let e = issue(&mut b, trail(&log)).unwrap_err();
    assert_eq!(e.code(), "Internal.CreateCSRError");
    assert_eq!(kinds(&path), ["created", "rolled_back"]);
    let rolled = &events(&path)[1];
    assert_eq!(rolled["cause"], "Internal.CreateCSRError");
    assert_eq!(rolled["outcome"], "ok");
    assert!(b.live.is_empty());

    // Not taken: dropped or rolled back.
    let mut b = MockBackend::default();
    let pending = prepare_csr(
        &mut b,
        &ValidRequest::example(),
        &ValidKeyOptions::default(),
        "ID2".into(),
        trail(&log),
    )
    .unwrap();
    drop(pending);
    assert!(b.live.is_empty());
    let last = events(&path).pop().unwrap();
    assert_eq!(
        (&last["event"], &last["cause"]),
        (&"rolled_back".into(), &"NotDelivered".into())
    );
}

#[test]
fn an_unwritable_log_before_delivery_removes_the_key() {
    let (_dir, path, log) = setup();
    let mut b = MockBackend::default();
    let settles = std::sync::Arc::clone(&b.settles);
    let pending = prepare(&mut b, trail(&log)).unwrap();
    // Not settled yet: until its delivery is recorded the key keeps its
    // "not yet delivered" mark, so a crash here leaves a key a sweep
    // removes, never one with only a `created` event.
    let settled = || settles.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(settled(), 0, "settled before its delivery was recorded");
    break_log(&path);
    let e = pending.record_delivery().unwrap_err();
    assert_eq!(e.code(), "Internal.Error");
    assert!(
        e.to_string().contains("audit log cannot be written")
            && e.to_string().contains("the new key pair was removed"),
        "{e}"
    );
    assert!(b.live.is_empty(), "the key outlived its missing event");
    assert!(b.tracked.is_empty());
    assert_eq!(
        settled(),
        0,
        "a key whose delivery was not recorded was settled"
    );
}

#[test]
fn an_unwritable_log_at_creation_removes_the_key() {
    let (_dir, path, log) = setup();
    break_log(&path);
    let mut b = MockBackend::default();
    let e = issue(&mut b, trail(&log)).unwrap_err();
    assert_eq!(e.code(), "Internal.Error");
    assert!(e.to_string().contains("was removed"), "{e}");
    assert_eq!((b.generated, b.live.len()), (1, 0));

    // And when removing it fails too, the error names the key left.
    let mut b = MockBackend {
        fail_destroy: true,
        ..Default::default()
    };
    let e = issue(&mut b, trail(&log)).unwrap_err();
    assert!(e.key_left_behind(), "{e}");
    assert!(
        e.to_string().contains("pkcs11:object=hsm-csr:example.com"),
        "{e}"
    );
}
