//! Black-box tests of the `hsm-csr` binary against real SoftHSM2 tokens,
//! each test on a private token, outputs checked with openssl, pkcs11-tool
//! and PyKCS11. Run through `scripts/test.sh`, which installs those tools.

mod common;

mod algorithms;
mod batch;
mod config_checks;
mod connections;
mod create;
mod errors;
mod faults;
mod hostile;
mod keys;
mod lifecycle;
mod output;
mod package;
mod pool;
mod selection;
mod service;
mod softhsm_conf;
mod tamper;
