//! Tells the integration suite (tests/integration.rs) whether this machine
//! has a token for it: SoftHSM2's module where Debian installs it, or one
//! named by `HSM_CSR_TEST_MODULE` (scripts/tokens/run.sh). Without either,
//! `cargo test` compiles the suite out and reports one ignored test that
//! says why, instead of failing every test on a missing token.
//!
//! Likewise for `redis-server` (Debian's package of that name), which a unit
//! test of the replicas' pool claims starts: without it on the PATH, that
//! test is ignored with the reason.

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(hsm_csr_no_test_token)");
    println!("cargo::rerun-if-env-changed=HSM_CSR_TEST_MODULE");
    println!("cargo::rerun-if-changed={SOFTHSM}");
    println!("cargo::rerun-if-changed=build.rs");
    let named = std::env::var_os("HSM_CSR_TEST_MODULE").is_some();
    if !named && !std::path::Path::new(SOFTHSM).exists() {
        println!("cargo::rustc-cfg=hsm_csr_no_test_token");
    }

    println!("cargo::rustc-check-cfg=cfg(hsm_csr_no_redis_server)");
    println!("cargo::rerun-if-env-changed=PATH");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let redis: Vec<_> = std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .collect();
    for candidate in &redis {
        println!("cargo::rerun-if-changed={}", candidate.display());
    }
    if !redis.iter().any(|p| p.is_file()) {
        println!("cargo::rustc-cfg=hsm_csr_no_redis_server");
    }
}
