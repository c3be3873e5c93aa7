//! Black-box tests of the `hsm-csr` binary against real SoftHSM2 tokens,
//! each test on a private token, outputs checked with openssl, pkcs11-tool
//! and PyKCS11. Run through `scripts/test.sh`, which installs those tools.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "a test that cannot go on fails on the spot; a black-box test runs one scenario end to end"
)]

mod common;

mod acme;
mod algorithms;
mod audit;
mod batch;
mod budget;
mod ca_compliance;
mod call;
mod companion;
mod config_checks;
mod connections;
mod crash;
mod create;
mod csr_rules;
mod docs;
mod durable;
mod errors;
mod faults;
mod hostile;
mod keys;
mod lifecycle;
mod output;
mod package;
mod pebble_harness;
mod pool;
mod selection;
mod service;
mod shared_state;
mod softhsm_conf;
mod tamper;
mod tenancy;
mod tokens_multi;
mod trips;
