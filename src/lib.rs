#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "acme")]
mod acme;
mod algorithm;
pub mod attach;
pub mod audit;
pub mod backend;
mod certificate;
#[cfg(feature = "cli")]
pub mod cli;
mod common_name;
pub mod config;
pub mod csr;
mod day;
mod error;
mod files;
pub mod fingerprint;
mod issue;
pub mod owner;
pub mod pin;
pub mod quota;
mod request;
pub mod retention;
pub mod san;
#[cfg(feature = "service")]
pub mod service;
pub mod session_pool;
mod spki;
pub mod subject;
#[cfg(feature = "cli")]
mod text;
mod verify;

pub use algorithm::{Hash, KeyType, SignatureAlgorithm};
pub use error::{AcmeFailure, Detail, Error, ErrorClass, Result};
pub use issue::{
    CsrResponse, KeyOptions, PendingCsr, Timings, ValidKeyOptions, issue_csr, new_request_id,
    prepare_csr,
};
pub use request::{CsrRequest, SubjectDefaults, ValidRequest};
