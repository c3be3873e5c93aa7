use super::*;
use cryptoki::context::Function;
use cryptoki::error::{Error as Pkcs11Error, RvError};

fn failed(function: Function, rv: RvError) -> Detail {
    Detail::pkcs11(&Pkcs11Error::Pkcs11(rv, function))
}

#[test]
fn a_lost_session_is_known_by_its_return_value() {
    for rv in [
        RvError::SessionHandleInvalid,
        RvError::SessionClosed,
        RvError::DeviceRemoved,
    ] {
        let e = Error::KeyGen(failed(Function::GenerateKeyPair, rv).context("making a key"));
        assert!(e.session_lost(), "{e}");
        assert_eq!(e.return_value(), Some(rv));
    }
    let e = Error::KeyGen(failed(Function::GenerateKeyPair, RvError::DeviceError));
    assert!(!e.session_lost(), "{e}");
    assert_eq!(
        e.to_string(),
        "Failed to generate rsa key. (C_GenerateKeyPair: CKR_DEVICE_ERROR)"
    );
}

#[test]
fn text_that_names_a_return_value_is_not_one() {
    // Request text reaches error messages: a caller must not be able to
    // make the service retry (or reconnect) by writing a CKR_ name.
    let e = Error::Malformed("CommonName \"CKR_SESSION_HANDLE_INVALID\" is invalid".into());
    assert!(!e.session_lost());
    let e = Error::KeyGen("C_GenerateKeyPair: CKR_SESSION_HANDLE_INVALID".into());
    assert!(!e.session_lost());
    assert_eq!(e.return_value(), None);
}

#[test]
fn a_failed_rollback_reports_the_first_failure() {
    let e = Error::RollbackFailed {
        original: Box::new(Error::CreateCsr(failed(
            Function::Sign,
            RvError::SessionClosed,
        ))),
        rollback: "C_DestroyObject: CKR_SESSION_CLOSED".into(),
        key_uri: "pkcs11:object=x".into(),
    };
    assert!(e.session_lost());
    assert_eq!(e.return_value(), Some(RvError::SessionClosed));
}
