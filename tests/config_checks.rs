//! The whole configuration is checked before the token is opened:
//! every case below names a module that does not exist, so
//! a command that reached the token would answer Token.ModuleNotLoadable.

use crate::common::serve_config::ServeConfig;
use crate::common::{PIN, Run, Token};

/// A config that would be right but for its module, which does not exist;
/// with no access key.
fn base(token: &Token) -> ServeConfig {
    std::fs::write(token.dir().join("pin"), format!("{PIN}\n")).unwrap();
    let missing = token.dir().join("no-such-module.so");
    ServeConfig::for_token(token).module(&missing.display().to_string())
}

/// `base` with one access key, its secret in HSM_CSR_TEST_SECRET.
fn with_key(token: &Token) -> ServeConfig {
    base(token).access_key("K", "HSM_CSR_TEST_SECRET", "[\"*\"]")
}

fn run(token: &Token, command: &str, config: &ServeConfig, secret_set: bool) -> Run {
    let path = config.write(token.dir());
    let mut cmd = token.hsm_csr();
    cmd.arg(command).arg("--config").arg(&path);
    if command == "create" {
        cmd.args(["--common-name", "www.example.com"]);
    }
    if secret_set {
        cmd.env("HSM_CSR_TEST_SECRET", "s3cret");
    } else {
        cmd.env_remove("HSM_CSR_TEST_SECRET");
    }
    Run::of(&mut cmd)
}

#[track_caller]
fn refused(run: &Run, what: &str) {
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("Config.Invalid: ") && run.stderr.contains(what),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn numbers_at_their_limits_are_refused_before_the_token() {
    let token = Token::new();
    for (setting, value) in [
        ("timestamp_window_s", "18446744073709551615"),
        ("timestamp_window_s", "9223372036854775807"),
        ("timestamp_window_s", "0"),
        ("request_timeout_ms", "0"),
        ("rate_limit", "4294967296"),
        ("max_body_bytes", "9223372036854775807"),
        ("header_timeout_ms", "1"),
        ("max_connections", "0"),
    ] {
        let config = with_key(&token).service(&format!("{setting} = {value}"));
        for command in ["serve", "create"] {
            refused(&run(&token, command, &config, true), setting);
        }
    }
}

#[test]
fn serve_checks_subject_defaults_and_secrets_before_the_token() {
    let token = Token::new();
    let bad_defaults = with_key(&token).extra("[subject.defaults]\ncountry = \"CHN\"");
    refused(
        &run(&token, "serve", &bad_defaults, true),
        "[subject.defaults]",
    );
    refused(
        &run(&token, "create", &bad_defaults, true),
        "[subject.defaults]",
    );
    refused(
        &run(&token, "serve", &with_key(&token), false),
        "environment variable HSM_CSR_TEST_SECRET is not set",
    );
    refused(
        &run(&token, "serve", &base(&token), true),
        "no [[service.access_keys]] configured",
    );
    let missing_tls = with_key(&token).tls(
        &token.dir().join("no-cert.pem"),
        &token.dir().join("no-key.pem"),
    );
    refused(&run(&token, "serve", &missing_tls, true), "no-cert.pem");
    let mut cmd = token.hsm_csr();
    cmd.args(["serve", "--listen", "not-an-address", "--config"])
        .arg(with_key(&token).write(token.dir()))
        .env("HSM_CSR_TEST_SECRET", "s3cret");
    refused(&Run::of(&mut cmd), "--listen");
    // With the configuration right, the same command does reach the token.
    let reached = run(&token, "serve", &with_key(&token), true);
    assert!(
        reached.stderr.contains("Token.ModuleNotLoadable"),
        "{}",
        reached.stderr
    );
}
