//! The service's audit trail: a response is released only once its key's
//! delivery is on disk, and not at all when it cannot be written.

use std::sync::Arc;

use axum::http::StatusCode;

use super::support::*;
use crate::audit::AuditLog;
use crate::service::{Service, ServiceConfig};

fn audited(path: &std::path::Path) -> Arc<Service<MockSessions>> {
    let svc = Arc::try_unwrap(service_with(
        MockSessions::default(),
        ServiceConfig::default(),
    ))
    .ok()
    .unwrap();
    Arc::new(svc.with_audit(Some(AuditLog::open(path).unwrap())))
}

fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_delivered_csr_has_its_events_with_the_access_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let svc = audited(&path);
    let (status, body, _) = send(&svc, signed(common())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = events(&path);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "delivered"]);
    for e in &events {
        assert_eq!(e["request_id"], body["RequestId"]);
        assert_eq!(e["pub_md5"], body["PubMd5"]);
        assert_eq!(e["actor"]["access_key"], "AKID");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("SECRET"), "{text}");
}

#[tokio::test]
async fn an_unwritable_audit_log_fails_the_call_and_keeps_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let svc = audited(&path);
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let (status, body, _) = send(&svc, signed(common())).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["Code"], "Internal.Error");
    // The operator's business: the path stays in the server log.
    assert!(!body.to_string().contains("audit.jsonl"), "{body}");
    let backend = svc.sessions().backend();
    assert_eq!((backend.generated, backend.live.len()), (1, 0));
}
