//! Small things a user trips on: each message names what to
//! fix, and the explicit choice wins.

use std::process::Command;

use crate::common::rpc;
use crate::common::server::Server;
use crate::common::{PIN, Run, Token};

/// `hsm-csr create` with HSM_CSR_PIN set to `env_pin` (or unset).
fn create_with(token: &Token, env_pin: Option<&str>, args: &[&str]) -> Run {
    let mut cmd: Command = token.hsm_csr();
    match env_pin {
        Some(p) => cmd.env("HSM_CSR_PIN", p),
        None => cmd.env_remove("HSM_CSR_PIN"),
    };
    cmd.arg("create")
        .args(token.token_flags())
        .args(["--label-prefix", &token.prefix])
        .args(args);
    Run::of(&mut cmd)
}

#[test]
fn a_failed_signature_is_logged_with_the_access_key_id_it_claimed() {
    let token = Token::new();
    let server = Server::start(&token, "ec-p256", "");
    let bad = rpc::get(
        &server.addr,
        &rpc::signed_query("MainKey", "not-the-secret", &[("CommonName", "a.example")]),
    );
    assert_eq!(bad.code, "SignatureDoesNotMatch", "{bad:?}");
    let line = server.wait_for_log("code=SignatureDoesNotMatch");
    assert!(line.contains("access_key=\"MainKey\""), "{line}");

    // Caller input: escaped and bounded, one line whatever it holds.
    let hostile = format!("Evil\n\"Id\u{2028}{}", "x".repeat(5000));
    let bad = rpc::get(
        &server.addr,
        &rpc::signed_query(&hostile, "whatever", &[("CommonName", "a.example")]),
    );
    assert_eq!(bad.code, "InvalidAccessKeyId.NotFound", "{bad:?}");
    let line = server.wait_for_log("code=InvalidAccessKeyId.NotFound");
    assert!(
        line.contains("access_key=\"Evil%0A%22Id%E2%80%A8xxx"),
        "{line}"
    );
    assert!(line.len() < 600, "{line}");
    assert!(!line.contains("not-the-secret"), "{line}");
    let log = server.stop();
    assert!(!log.contains("\"Id"), "{log}");
}

#[test]
fn keys_delete_without_yes_is_a_usage_error() {
    let token = Token::new();
    let run = token.run(&["keys", "delete", "whatever"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        !run.stderr.contains("InvalidValue.Malformed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("--yes") && run.stderr.contains("Usage:"),
        "{}",
        run.stderr
    );
}

#[test]
fn keys_show_takes_the_bare_common_name_and_the_full_label() {
    let token = Token::new();
    let made = token.create(&["--common-name", "bare.example"]).ok().json();
    let config = token.dir().join("prefix.toml");
    std::fs::write(
        &config,
        format!("[key]\nlabel_prefix = \"{}\"\n", token.prefix),
    )
    .unwrap();
    let label = format!("{}bare.example", token.prefix);
    for key in ["bare.example", label.as_str()] {
        let run = token
            .run(
                &["keys", "show", key],
                &["--config", config.to_str().unwrap(), "--format", "json"],
            )
            .ok();
        let shown: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(shown.len(), 1, "{key}");
        assert_eq!(shown[0]["PubMd5"], made["PubMd5"], "{key}");
    }
}

#[test]
fn an_explicit_pin_file_beats_a_stale_environment_and_pin_errors_name_their_source() {
    let Some(token) = Token::private_softhsm("wrong PINs count towards the token's lockout") else {
        return;
    };
    let good = token.dir().join("good-pin");
    std::fs::write(&good, format!("{PIN}\n")).unwrap();
    let stale = "86420";
    let run = create_with(
        &token,
        Some(stale),
        &[
            "--pin-file",
            good.to_str().unwrap(),
            "--common-name",
            "pin.example",
        ],
    );
    assert_eq!(run.code, 0, "the stale HSM_CSR_PIN won: {}", run.stderr);

    let wrong = token.dir().join("wrong-pin");
    std::fs::write(&wrong, "97531\n").unwrap();
    let run = create_with(
        &token,
        None,
        &[
            "--pin-file",
            wrong.to_str().unwrap(),
            "--common-name",
            "pin.example",
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("Token.PinIncorrect"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("from --pin-file {}", wrong.display())),
        "{}",
        run.stderr
    );
    let run = create_with(&token, Some(stale), &["--common-name", "pin.example"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("from HSM_CSR_PIN"), "{}", run.stderr);
    for secret in [stale, "97531", PIN] {
        assert!(!run.stderr.contains(secret), "{}", run.stderr);
    }
    // Still not locked: two failures.
    create_with(&token, Some(PIN), &["--common-name", "pin.example"]).ok();
}

#[test]
fn a_missing_common_name_names_the_flag() {
    let token = Token::new();
    let run = token.create(&[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--common-name"), "{}", run.stderr);
    assert!(token.keys().is_empty());
}
