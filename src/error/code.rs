//! What an error means to the front ends: its API code (the cloud API's
//! error table), its class (who has to act), the message callers may see,
//! and what it says about the token session. The one place each error is
//! given its code.

use std::fmt;

use cryptoki::error::RvError;

use super::{AcmeFailure, Error, ErrorClass};

impl Error {
    /// The API error code, as the cloud API's error table names it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingCommonName => "MissingCommonName",
            Error::Malformed(_) => "InvalidValue.Malformed",
            Error::ModuleLoad { .. } => "Token.ModuleNotLoadable",
            Error::TokenNotFound { .. } => "Token.NotFound",
            Error::PinIncorrect { .. } => "Token.PinIncorrect",
            Error::PinLocked { .. } => "Token.PinLocked",
            Error::PinNotInitialized { .. } => "Token.PinNotInitialized",
            Error::LoginUnavailable { .. } => "Token.Error",
            Error::PinRequired { .. } => "Token.PinRequired",
            Error::Unsupported { .. } => "Token.MechanismUnsupported",
            Error::Config(_) => "Config.Invalid",
            Error::Unreachable { .. } => "SDK.ServerUnreachable",
            Error::Token { .. } => "Token.Error",
            Error::KeyGen(_) => "Internal.KeyError",
            Error::EncodeKey(_) => "Internal.EncodeKeyError",
            Error::CreateCsr(_) => "Internal.CreateCSRError",
            Error::EncodeCsr(_) => "Internal.EncodeCSRError",
            Error::Output { .. } | Error::Audit { .. } | Error::Internal(_) => "Internal.Error",
            Error::CertificateMissing => "Certificate.MissingParameter",
            Error::CertificateDecode(_) => "Certificate.DecodeError",
            Error::CertificateFormat(_) => "Certificate.FormatError",
            Error::CertificateNoPrivateKey { .. } => "Certificate.NoPrivateKey",
            Error::CertificateMismatch { .. } => "Certificate.MissMatch",
            Error::CertificateExpired { .. } => "Certificate.Expired",
            Error::CertificateNotYetValid { .. } => "Certificate.NotYetValid",
            Error::CertificateIsCa => "Certificate.IsCA",
            Error::CertificateUsage(_) => "Certificate.UsageMismatch",
            Error::CertificateChain(_) => "Certificate.ChainInvalid",
            Error::CertificateOutdated { .. } => "Certificate.Outdated",
            Error::KeyQuotaExceeded { .. } => "QuotaExceeded.Key",
            Error::TokenFull { .. } | Error::LeaseNotHeld => "ServiceUnavailable",
            Error::KeyNotFound { .. } => "Key.NotFound",
            Error::KeyAmbiguous { .. } => "Key.Ambiguous",
            Error::Acme { kind, .. } => match kind {
                AcmeFailure::Unreachable => "Acme.Unreachable",
                AcmeFailure::Refused => "Acme.Refused",
                AcmeFailure::ChallengeFailed => "Acme.ChallengeFailed",
                AcmeFailure::Responder => "Acme.ResponderFailed",
                AcmeFailure::BadCertificate => "Acme.BadCertificate",
                AcmeFailure::DeployHook => "Acme.DeployHookFailed",
                AcmeFailure::RateLimited => "Acme.RateLimited",
            },
            Error::RollbackFailed { original, .. } => original.code(),
        }
    }

    /// Who has to act: the caller, the operator of the token, or us.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::MissingCommonName
            | Error::Malformed(_)
            | Error::CertificateMissing
            | Error::CertificateDecode(_)
            | Error::CertificateFormat(_)
            | Error::CertificateNoPrivateKey { .. }
            | Error::CertificateMismatch { .. }
            | Error::CertificateExpired { .. }
            | Error::CertificateNotYetValid { .. }
            | Error::CertificateIsCa
            | Error::CertificateUsage(_)
            | Error::CertificateChain(_)
            | Error::CertificateOutdated { .. }
            | Error::KeyQuotaExceeded { .. }
            | Error::KeyNotFound { .. }
            | Error::KeyAmbiguous { .. }
            | Error::Acme {
                kind: AcmeFailure::Refused | AcmeFailure::ChallengeFailed,
                ..
            } => ErrorClass::Request,
            Error::ModuleLoad { .. }
            | Error::TokenNotFound { .. }
            | Error::PinIncorrect { .. }
            | Error::PinLocked { .. }
            | Error::PinNotInitialized { .. }
            | Error::LoginUnavailable { .. }
            | Error::PinRequired { .. }
            | Error::Unsupported { .. }
            | Error::Config(_)
            | Error::TokenFull { .. }
            | Error::LeaseNotHeld
            | Error::Audit { .. }
            | Error::Token { .. }
            | Error::Acme {
                kind: AcmeFailure::Responder | AcmeFailure::DeployHook,
                ..
            } => ErrorClass::Token,
            Error::KeyGen(_)
            | Error::EncodeKey(_)
            | Error::CreateCsr(_)
            | Error::EncodeCsr(_)
            | Error::Output { .. }
            | Error::Unreachable { .. }
            | Error::Internal(_)
            | Error::Acme {
                kind:
                    AcmeFailure::Unreachable | AcmeFailure::BadCertificate | AcmeFailure::RateLimited,
                ..
            } => ErrorClass::Internal,
            Error::RollbackFailed { original, .. } => original.class(),
        }
    }

    /// What a caller of the service is told: for the request's own
    /// mistakes the whole message; for failures on our side the API's
    /// message alone, without the detail (a PKCS#11 function and return
    /// value, a path, a CA's answer), which stays in the log.
    pub fn public_message(&self) -> String {
        let generic = "The request processing has failed due to backend service exception.";
        match self {
            _ if self.class() == ErrorClass::Request => self.to_string(),
            Error::RollbackFailed { original, .. } => original.public_message(),
            Error::KeyGen(_) => "Failed to generate rsa key.".into(),
            Error::EncodeKey(_) => "Failed to encode private key.".into(),
            Error::CreateCsr(_) => "Failed to create CSR.".into(),
            Error::EncodeCsr(_) => "Failed to encode CSR.".into(),
            _ => generic.into(),
        }
    }

    /// Whether the token said the session itself is gone
    /// (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_REMOVED):
    /// the request was not judged, and another session may serve it.
    pub fn session_lost(&self) -> bool {
        matches!(
            self.return_value(),
            Some(RvError::SessionHandleInvalid | RvError::SessionClosed | RvError::DeviceRemoved)
        )
    }

    /// The PKCS#11 return value behind this error, when a token call failed
    /// (for [`Error::RollbackFailed`], that of the first failure).
    pub fn return_value(&self) -> Option<RvError> {
        match self {
            Error::KeyGen(d) | Error::EncodeKey(d) | Error::CreateCsr(d) => d.return_value(),
            Error::Token { detail, .. } | Error::LoginUnavailable { detail, .. } => {
                detail.return_value()
            }
            Error::RollbackFailed { original, .. } => original.return_value(),
            _ => None,
        }
    }

    /// Whether a key pair made for the request may still be on the token.
    pub fn key_left_behind(&self) -> bool {
        matches!(self, Error::RollbackFailed { .. })
    }

    /// Shorthand for an `InvalidValue.Malformed` error.
    pub(crate) fn malformed(message: impl fmt::Display) -> Self {
        Error::Malformed(message.to_string())
    }
}
