//! Black-box tests of the `hsm-csr` binary against real tokens: a private
//! SoftHSM2 token per test, or the one shared token scripts/tokens/run.sh
//! names (openCryptoki, tpm2-pkcs11, p11-kit). Outputs are checked with
//! tools nobody here wrote: openssl, pkcs11-tool, PyKCS11, the official
//! SDKs, pebble, certbot, Chromium. Run through `scripts/test.sh`, which
//! installs them. Without a token (no SoftHSM2, no HSM_CSR_TEST_MODULE) the
//! suite is compiled out and one ignored test says why (build.rs).
//!
//! The modules, by the behaviour they prove:

#![allow(unreachable_pub, reason = "a test or example crate has no public API")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::indexing_slicing,
    reason = "a test that cannot go on fails on the spot (an index out of range included); a black-box test runs one scenario end to end"
)]

/// Declares the suite's modules, compiled only where there is a token.
macro_rules! on_a_token {
    ($($(#[$doc:meta])* $module:ident;)*) => {
        $( $(#[$doc])* #[cfg(not(hsm_csr_no_test_token))] mod $module; )*
    };
}

on_a_token! {
    /// Shared helpers: tokens, a running `serve` and the config it runs on
    /// (`ServeConfig`), pebble, Redis, pkcs11-spy.
    common;

    // --- A CSR from the command line ---
    /// `create`: the answer and the CSR it carries.
    create;
    /// Key types, hashes, PSS and the mechanism fallbacks, read by openssl.
    algorithms;
    /// The common-name and SAN rules public CAs require, via `create` and `serve`.
    csr_rules;
    /// `batch`: answers in input order, failures isolated.
    batch;
    /// `create --out` and `batch --output`: written to what the user named, and nothing else.
    output;
    /// Finding the token: RFC 7512 URIs, serials, PIN sources, refusals.
    selection;
    /// The key pair's attributes on the token, and nothing left after a failure.
    key_pairs;
    /// Listing and deleting keys, storing the CA's certificate, using a key by URI.
    lifecycle;

    // --- Errors a user meets ---
    /// Bad requests, tokens and PINs: exit code, API code, a message that says what to fix.
    errors;
    /// The whole config is checked before a token is opened.
    config_checks;
    /// Small things users trip on: each message names the fix.
    trips;
    /// SoftHSM2 without SOFTHSM2_CONF: the error says so; SoftHSM2 2.6
    /// under `serve`: a warning of other processes.
    softhsm_conf;

    // --- The service ---
    /// `serve` called through both official SDK generations.
    service;
    /// `hsm-csr call`: both signatures, refusals, an absent service.
    call;
    /// SetCdnDomainCSRCertificate / SetDcdnDomainCSRCertificate: certificates stored beside their keys.
    companion;
    /// `/explorer` in headless Chromium: signed in the page, the secret never sent.
    explorer;
    /// Malformed, oversized, duplicated, replayed, forged and slow requests.
    hostile;
    /// Requests altered in flight are refused, never reinterpreted.
    tamper;
    /// Slow and idle clients, connection limits, HTTP methods.
    connections;
    /// The key pool: pool keys told apart by what no caller can produce.
    pool;
    /// Several tenants on one token: owners, quotas, `keys prune`.
    tenancy;

    // --- Keys that survive crashes, tokens that fail ---
    /// No undelivered key outlives its maker: marks, sweeps, pool claims.
    durable;
    /// Every key-making command killed at random points: every key accounted for.
    crash;
    /// The token goes away under load and comes back.
    faults;
    /// One `serve` on two tokens, one of them failing.
    tokens_multi;
    /// Replicas sharing rate limits, nonces and the pool through Redis.
    shared_state;

    // --- What is recorded and what it costs ---
    /// The audit trail, checked against what is on the token.
    audit;
    /// Token calls per CSR, counted with pkcs11-spy and held to a budget.
    budget;

    // --- Certificates from a CA ---
    /// `acme issue|renew|status` against pebble and acme2certifier.
    acme;
    /// The pebble harness the ACME tests rely on.
    pebble_harness;
    /// CSRs accepted by pebble through certbot.
    ca_compliance;

    // --- What a newcomer reads and installs ---
    /// The README and docs: links, samples and figures that hold.
    docs;
    /// The Debian package, unpacked and run.
    package;
}

/// Stands for the whole suite where it cannot run.
#[cfg(hsm_csr_no_test_token)]
#[test]
#[ignore = "no token to test against: SoftHSM2 is not installed (/usr/lib/softhsm/libsofthsm2.so) \
            and HSM_CSR_TEST_MODULE names none; scripts/test.sh installs SoftHSM2 and the other tools"]
fn the_integration_suite_needs_a_token() {}
