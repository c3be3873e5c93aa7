#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "acme")]
pub mod acme;
pub mod algorithm;
pub mod attach;
pub mod audit;
pub mod backend;
pub mod certificate;
mod common_name;
pub mod config;
pub mod csr;
pub mod day;
pub mod error;
pub mod files;
pub mod fingerprint;
pub mod issue;
pub mod owner;
pub mod pin;
pub mod quota;
pub mod request;
pub mod retention;
pub mod san;
#[cfg(feature = "service")]
pub mod service;
pub mod session_pool;
pub mod spki;
pub mod subject;
pub mod text;
pub mod verify;

pub use algorithm::{Hash, KeyType, SignatureAlgorithm};
pub use error::{AcmeFailure, Error, ErrorClass, Result};
pub use issue::{
    CsrResponse, KeyOptions, PendingCsr, Timings, ValidKeyOptions, issue_csr, issue_csr_audited,
    new_request_id, prepare_csr, prepare_csr_audited,
};
pub use request::{CsrRequest, SubjectDefaults, ValidRequest};
