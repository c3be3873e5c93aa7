//! Unit tests of the session pool's retry on a lost session.

use cryptoki::context::Function;
use cryptoki::error::RvError;

use super::*;
use crate::backend::mock::{MockBackend, pkcs11_failure};
use crate::issue::issue_csr;

fn lose_sessions(n: u32) -> MockBackend {
    MockBackend {
        lose_session_on_generate: n,
        ..Default::default()
    }
}

fn issue_retrying(
    b: &mut MockBackend,
    reopen: impl FnOnce(&mut MockBackend) -> Result<MockBackend>,
) -> Result<CsrResponse> {
    retry_on_lost_session(b, reopen, |b| {
        issue_csr(
            b,
            &ValidRequest::example(),
            &ValidKeyOptions::default(),
            "ID".into(),
            None,
        )
    })
}

/// A new session on the same mock token.
fn next_session(old: &mut MockBackend) -> Result<MockBackend> {
    Ok(MockBackend {
        lose_session_on_generate: old.lose_session_on_generate,
        session: old.session + 1,
        ..Default::default()
    })
}

#[test]
fn a_session_lost_before_keygen_is_reopened_and_the_request_retried_once() {
    let mut b = lose_sessions(1);
    let r = issue_retrying(&mut b, next_session).unwrap();
    assert_eq!(r.request_id, "ID");
    assert_eq!((b.session, b.live.len()), (1, 1));
}

#[test]
fn only_one_retry() {
    let mut b = lose_sessions(2);
    let e = issue_retrying(&mut b, next_session).unwrap_err();
    assert!(e.session_lost(), "{e}");
    assert_eq!((b.session, b.generated), (1, 0));
}

#[test]
fn no_retry_when_the_token_is_gone_or_the_error_is_not_the_session() {
    let mut b = lose_sessions(1);
    let e = issue_retrying(&mut b, |_| {
        Err(Error::Token {
            op: "opening a read-write session",
            token: "t".into(),
            detail: "C_OpenSession: CKR_DEVICE_ERROR".into(),
        })
    })
    .unwrap_err();
    assert_eq!(e.code(), "Token.Error");

    let mut b = MockBackend {
        fail_sign: true,
        ..Default::default()
    };
    let e = issue_retrying(&mut b, |_| panic!("not a lost session")).unwrap_err();
    assert_eq!(e.code(), "Internal.CreateCSRError");
}

#[test]
fn no_retry_once_a_key_was_made_and_left() {
    let left = || Error::RollbackFailed {
        original: Box::new(Error::CreateCsr(pkcs11_failure(
            Function::Sign,
            RvError::SessionHandleInvalid,
        ))),
        rollback: "C_DestroyObject: CKR_SESSION_HANDLE_INVALID".into(),
        key_uri: "pkcs11:object=x".into(),
    };
    assert!(left().session_lost() && left().key_left_behind());
    let mut calls = 0;
    let got: Result<()> = retry_on_lost_session(
        &mut MockBackend::default(),
        |_| panic!("a key is on the token: no retry"),
        |_| {
            calls += 1;
            Err(left())
        },
    );
    assert!(got.unwrap_err().key_left_behind());
    assert_eq!(calls, 1);
}
