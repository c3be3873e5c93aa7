//! One error type for the library, and the one place where each error is
//! given its API code (the cloud API's error table) and its class
//! (`error/code.rs`).
//!
//! Front ends map [`ErrorClass`] to what they speak: the CLI to exit codes
//! (`src/main.rs`), the HTTP service to statuses. Messages never contain a
//! PIN or key material.

mod code;
mod detail;
pub(crate) mod tls;

pub use detail::Detail;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who has to act to fix an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request itself is wrong (the API's HTTP 400 errors).
    Request,
    /// The token, module, PIN or configuration needs attention.
    Token,
    /// Something failed while making the key or CSR (the API's HTTP 500 errors).
    Internal,
}

/// Everything that can go wrong while issuing a CSR.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `CommonName` was missing or empty.
    #[error("CommonName is required and must not be empty.")]
    MissingCommonName,

    /// A request field failed validation; the message names the field.
    #[error("{0}")]
    Malformed(String),

    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {reason}. Check [token] module / --module.")]
    ModuleLoad {
        /// Path of the module that was tried.
        path: String,
        /// What the loader or C_Initialize said.
        reason: String,
    },

    /// No token with the requested label is present.
    #[error("no token {label} in {module}; tokens present: {}. Check [token] label / --token.{hint}", list_or_none(.available))]
    TokenNotFound {
        /// What was asked for: `"label"`, `serial ...`.
        label: String,
        /// The module searched.
        module: String,
        /// Labels of the tokens that are present.
        available: Vec<String>,
        /// " Sentence." on SOFTHSM2_CONF for SoftHSM2, else "".
        hint: String,
    },

    /// C_Login said CKR_PIN_INCORRECT. Never retried: HSMs lock after a few tries.
    #[error(
        "PIN incorrect for token {token:?} ({}); not retried, since tokens lock after repeated failures.",
        pin_source.as_ref().map_or_else(|| "check HSM_CSR_PIN / the PIN file".to_owned(), |s| format!("the PIN came from {s}"))
    )]
    PinIncorrect {
        /// Token label.
        token: String,
        /// Where the PIN came from (`--pin-file PATH`, `HSM_CSR_PIN`, ...),
        /// when the caller knows; never the PIN.
        pin_source: Option<String>,
    },

    /// The user PIN is locked on the token.
    #[error(
        "the user PIN of token {token:?} is locked; the security officer must unlock or reset it."
    )]
    PinLocked {
        /// Token label.
        token: String,
    },

    /// C_Login said CKR_USER_PIN_NOT_INITIALIZED. No PIN was checked, so no
    /// lockout counter moved; SoftHSM also says it, for a moment, while
    /// another process rewrites the token.
    #[error(
        "the user PIN of token {token:?} is not initialized; the security officer must set it (pkcs11-tool --init-pin)."
    )]
    PinNotInitialized {
        /// Token label.
        token: String,
    },

    /// C_Login failed without judging the PIN (CKR_GENERAL_ERROR).
    #[error(
        "token {token:?} could not check the PIN ({detail}); it may be busy or in an error state."
    )]
    LoginUnavailable {
        /// Token label.
        token: String,
        /// The PKCS#11 answer.
        detail: Detail,
    },

    /// No PIN could be obtained from any source.
    #[error(
        "no PIN for token {token:?}: set HSM_CSR_PIN, pass --pin-file, set [token] pin_file, or run on a terminal to be prompted."
    )]
    PinRequired {
        /// Token label.
        token: String,
    },

    /// The token does not offer a mechanism the operation needs.
    #[error("token {token:?} does not support {what}.")]
    Unsupported {
        /// Token label.
        token: String,
        /// What is missing, e.g. `CKM_SHA256_RSA_PKCS`.
        what: String,
    },

    /// The configuration (file, flags or environment) is unusable.
    #[error("{0}")]
    Config(String),

    /// A token call outside key generation and signing failed.
    #[error("{op} failed on token {token:?}: {detail}")]
    Token {
        /// What was being done.
        op: &'static str,
        /// Token label.
        token: String,
        /// The PKCS#11 function and return value, e.g. `C_Sign: CKR_DEVICE_ERROR`.
        detail: Detail,
    },

    /// An operation failed after the key pair was made, and removing the
    /// pair failed too. Code and class are those of the first failure.
    #[error(
        "{original} Removing the new key pair also failed ({rollback}); delete {key_uri} by hand."
    )]
    RollbackFailed {
        /// The failure that triggered the rollback.
        original: Box<Error>,
        /// Why the rollback failed.
        rollback: String,
        /// URI of the key pair left on the token.
        key_uri: String,
    },

    /// C_GenerateKeyPair failed.
    #[error("Failed to generate rsa key. ({0})")]
    KeyGen(Detail),

    /// The public key could not be read from the token or encoded. The
    /// message keeps the cloud API's wording ("private key"), which the API
    /// contract fixes; the detail says what really failed.
    #[error("Failed to encode private key. ({0})")]
    EncodeKey(Detail),

    /// Signing the CertificationRequestInfo failed.
    #[error("Failed to create CSR. ({0})")]
    CreateCsr(Detail),

    /// DER or PEM encoding of the CSR failed.
    #[error("Failed to encode CSR. ({0})")]
    EncodeCsr(String),

    /// Writing the response failed. For `create`, the key pair was rolled
    /// back (`rolled_back`).
    #[error("could not write the response ({detail}){}", if *.rolled_back { "; the new key pair was removed from the token." } else { "." })]
    Output {
        /// The I/O error.
        detail: String,
        /// Whether a new key pair was removed because of it.
        rolled_back: bool,
    },

    /// The audit log (`[audit] path`) cannot be written. For a request
    /// that made a key pair, the pair was removed (`rolled_back`).
    #[error("the audit log cannot be written ({detail}){}", if *.rolled_back { "; the new key pair was removed from the token." } else { "." })]
    Audit {
        /// The path and the I/O error.
        detail: String,
        /// Whether a new key pair was removed because of it.
        rolled_back: bool,
    },

    /// No certificate was given (the API's ServerCertificate is missing or empty).
    #[error(
        "You must specify the Certificate parameter. (Send the PEM certificate as ServerCertificate.)"
    )]
    CertificateMissing,

    /// The certificate is not PEM, base64 or DER, or its PEM or base64 is broken.
    #[error("An error occurred while decoding the certificate. ({0}; send the PEM certificate.)")]
    CertificateDecode(String),

    /// What was given decodes, but not to X.509 certificates.
    #[error("The format of the certificate is invalid. ({0})")]
    CertificateFormat(String),

    /// No key on the token has the certificate's public key.
    #[error(
        "The private key of the certificate does not exist. (No key on the token has its public key, PubMd5 {pub_md5}.)"
    )]
    CertificateNoPrivateKey {
        /// Token label; not in the message, which API callers see.
        token: String,
        /// The certificate's PubMd5.
        pub_md5: String,
    },

    /// The certificate does not cover the domain asked for.
    #[error(
        "The certificate does not match the domain. ({domain:?} is not among its names: {covers}.)"
    )]
    CertificateMismatch {
        /// The domain asked for, as an A-label.
        domain: String,
        /// The names the certificate covers, quoted and escaped.
        covers: String,
    },

    /// The certificate's validity ended (RFC 5280 section 4.1.2.5).
    #[error("The certificate has expired. (notAfter {not_after}; send a current certificate.)")]
    CertificateExpired {
        /// Its notAfter, RFC 3339.
        not_after: String,
    },

    /// The certificate's validity has not begun, beyond the allowed clock skew.
    #[error(
        "The certificate is not yet valid. (notBefore {not_before}; check this host's clock and the CA's.)"
    )]
    CertificateNotYetValid {
        /// Its notBefore, RFC 3339.
        not_before: String,
    },

    /// The certificate is a CA's (basicConstraints cA TRUE, RFC 5280
    /// section 4.2.1.9), not one for a server.
    #[error(
        "The certificate is a CA certificate. (Send the server's certificate first, then its chain.)"
    )]
    CertificateIsCa,

    /// keyUsage or extendedKeyUsage rule out TLS server use (RFC 5280
    /// sections 4.2.1.3 and 4.2.1.12).
    #[error("The certificate is not for TLS servers. ({0})")]
    CertificateUsage(String),

    /// A certificate of the chain is not signed by the next one's key.
    #[error("The certificate chain does not verify. ({0})")]
    CertificateChain(String),

    /// The key already has its most certificates, each newer than this one.
    #[error(
        "A newer certificate is already stored for this key. (It keeps its {kept} newest certificates; this one is older than all of them.)"
    )]
    CertificateOutdated {
        /// How many certificates a key keeps.
        kept: usize,
    },

    /// The caller's access key owns as many key pairs as it may.
    #[error(
        "The key quota of this AccessKey is used up. (It may own {limit} key pairs on the key store; retire one, or ask the operator to raise max_keys.)"
    )]
    KeyQuotaExceeded {
        /// Its `max_keys`.
        limit: usize,
    },

    /// The token holds as many objects as its operator says it can
    /// (`[token] max_objects`); nothing more is made on it.
    #[error(
        "token {token:?} is full: {objects} objects of the {max_objects} [token] max_objects allows; nothing more is made on it until keys are retired (hsm-csr keys prune)."
    )]
    TokenFull {
        /// Token label.
        token: String,
        /// Objects counted on it.
        objects: usize,
        /// `max_objects`.
        max_objects: usize,
    },

    /// This replica's lease in Redis is not held (Redis was unreachable):
    /// no key is made, since another replica may be sweeping its keys.
    #[error(
        "this replica does not hold its lease in Redis (it was unreachable); no key is made until the lease is renewed."
    )]
    LeaseNotHeld,

    /// No key matches the KEY argument.
    #[error(
        "no key on token {token:?} matches {key:?} (a pkcs11: URI, an id, a label, a common name or a PubMd5); see `hsm-csr keys list`."
    )]
    KeyNotFound {
        /// Token label.
        token: String,
        /// What was asked for.
        key: String,
    },

    /// More than one key matches the KEY argument.
    #[error("{key:?} matches {count} keys: {uris}; name one by its pkcs11: URI.")]
    KeyAmbiguous {
        /// What was asked for.
        key: String,
        /// How many matched.
        count: usize,
        /// Their URIs.
        uris: String,
    },

    /// An ACME step failed: the CA refused it (with its RFC 7807 problem
    /// document in `detail`), did not answer in time, or a challenge could
    /// not be answered. Any key pair made for the order has been removed.
    #[error("ACME {step} failed: {detail}")]
    Acme {
        /// What failed.
        kind: AcmeFailure,
        /// The step: `directory`, `account`, `new order`, `challenge`, ...
        step: &'static str,
        /// The CA's problem document (type, detail, subproblems), or what
        /// went wrong on the way to it.
        detail: String,
    },

    /// `hsm-csr call` got no answer: no connection, a TLS failure, a time-out.
    #[error("no answer from {endpoint}: {reason}")]
    Unreachable {
        /// The endpoint called.
        endpoint: String,
        /// What failed, and what to check.
        reason: String,
    },

    /// Anything else.
    #[error("The request processing has failed due to backend service exception. ({0})")]
    Internal(String),
}

/// How an ACME step failed, for [`Error::Acme`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeFailure {
    /// No answer: connection refused, TLS failure, or a timeout.
    Unreachable,
    /// The CA answered with a problem document (RFC 8555 section 6.7).
    Refused,
    /// The CA could not validate a challenge.
    ChallengeFailed,
    /// The dns-01 hook failed or the http-01 responder could not start.
    Responder,
    /// The CA sent a certificate that is not for the new key.
    BadCertificate,
    /// The deploy hook failed; the certificate is stored.
    DeployHook,
    /// The CA's rate limit (`rateLimited`, HTTP 429): try again later.
    RateLimited,
}

fn list_or_none(labels: &[String]) -> String {
    if labels.is_empty() {
        "none".to_owned()
    } else {
        labels
            .iter()
            .map(|l| {
                if l.starts_with('<') {
                    l.clone()
                } else {
                    format!("{l:?}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl From<der::Error> for Error {
    fn from(e: der::Error) -> Self {
        Error::EncodeCsr(e.to_string())
    }
}

#[cfg(test)]
mod tests;
