//! `hsm-csr`: certificate signing requests whose RSA key pair is generated
//! inside a PKCS#11 token and never leaves it.
//!
//! Features (both default): `service`, the HTTP service
//! ([`service`], `hsm-csr serve`), and `cli`, what the `hsm-csr` binary
//! needs. With neither, the library builds without HTTP, TLS or async
//! crates; `[service]` in a config file is read and checked all the same
//! ([`config::ServiceConfig`]).
//!
//! It answers like the cloud operations CreateCdnCertificateSigningRequest
//! and CreateDcdnCertificateSigningRequest (`RequestId`, `PubMd5`, `Csr`,
//! `CommonName`), plus the `KeyUri` of the new key on the token.
//!
//! ```no_run
//! use hsm_csr::{CsrRequest, KeyOptions, SubjectDefaults, issue_csr, new_request_id};
//! use hsm_csr::backend::pkcs11::{Pkcs11Backend, TokenSelector};
//! use cryptoki::types::AuthPin;
//!
//! # fn main() -> hsm_csr::Result<()> {
//! let request = CsrRequest { common_name: Some("www.example.com".into()), ..Default::default() }
//!     .validate(&SubjectDefaults::default())?;
//! let mut token = Pkcs11Backend::open("/usr/lib/softhsm/libsofthsm2.so".as_ref(), &TokenSelector::label("demo"))?;
//! token.login(Some(&AuthPin::from("1234")))?;
//! let options = KeyOptions::default().validate()?;
//! let response = issue_csr(&mut token, &request, &options, new_request_id())?;
//! println!("{}", response.csr);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "acme")]
pub mod acme;
pub mod algorithm;
pub mod backend;
pub mod certificate;
pub mod config;
pub mod csr;
pub mod error;
pub mod fingerprint;
pub mod issue;
pub mod pin;
pub mod request;
pub mod san;
#[cfg(feature = "service")]
pub mod service;
pub mod spki;
pub mod subject;
pub mod verify;

pub use algorithm::{Hash, KeyType, SignatureAlgorithm};
pub use error::{AcmeFailure, Error, ErrorClass, Result};
pub use issue::{
    CsrResponse, KeyOptions, PendingCsr, Timings, ValidKeyOptions, issue_csr, new_request_id,
    prepare_csr,
};
pub use request::{CsrRequest, SubjectDefaults, ValidRequest};
