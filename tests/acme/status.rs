//! `acme status`: each certificate with its expiry, the CA's window as
//! last asked, its next renewal, profile and last error, from the token
//! and the account's files alone.

use super::{acme, http_01_anywhere};
use crate::common::Token;
use crate::common::a2c::{A2cOptions, Acme2Certifier};

#[test]
fn status_shows_windows_plans_profiles_and_the_last_error_without_the_ca() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let mut ca = Acme2Certifier::start(&A2cOptions {
        window_length: Some("1h"),
        profiles: &[("classic", "6h"), ("shortlived", "2h")],
        ..A2cOptions::default()
    });
    let responder = http_01_anywhere();
    let issue = |name: &str, extra: &[&str]| {
        let mut args = vec!["--common-name", name, "--http-01", &responder];
        args.extend_from_slice(extra);
        acme(&token, &ca, "issue", &args).ok().json()
    };
    let short = issue("short.example.test", &["--profile", "shortlived"]);
    issue("long.example.test", &[]);
    // One run asks the CA for both windows; nothing is due.
    let run = acme(&token, &ca, "renew", &["--http-01", &responder]);
    assert_eq!(run.code, 10, "{}", run.stderr);
    let directory = ca.directory_url();
    ca.stop();

    let status = |extra: &[&str]| {
        let account = super::account(&token, &ca);
        let mut args = vec![
            "--account",
            account.to_str().unwrap(),
            "--label-prefix",
            &token.prefix,
        ];
        args.extend_from_slice(extra);
        token.run(&["acme", "status"], &args)
    };
    let json = status(&["--format", "json"]).ok().json();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    // The two-hour certificate comes first: it is renewed first.
    assert_eq!(rows[0]["CommonName"], "short.example.test");
    assert_eq!(rows[0]["Profile"], "shortlived");
    assert_eq!(rows[0]["KeyUri"], short["KeyUri"]);
    assert_eq!(rows[0]["Names"], serde_json::json!(["short.example.test"]));
    assert_eq!(rows[0]["DaysLeft"], 0);
    assert_eq!(rows[0]["Due"], false);
    assert!(rows[0]["Window"]["Start"].is_string(), "{json}");
    assert_eq!(rows[1]["CommonName"], "long.example.test");
    assert_eq!(rows[1]["Profile"], serde_json::Value::Null);
    assert_eq!(rows[1]["LastError"], serde_json::Value::Null);

    // A run at a time both are due, with the CA gone: both fail, and
    // status says why, and that they are due.
    let end = super::unix(rows[1]["NotAfter"].as_str().unwrap());
    let late = (end - 60).to_string();
    let run = token.run(
        &["acme", "renew"],
        &[
            "--directory",
            &directory,
            "--ca-root",
            ca.tls_ca().to_str().unwrap(),
            "--account",
            super::account(&token, &ca).to_str().unwrap(),
            "--label-prefix",
            &token.prefix,
            "--http-01",
            &responder,
            "--timeout",
            "5",
            "--now",
            &late,
        ],
    );
    assert_ne!(run.code, 0, "{}", run.stderr);
    let json = status(&["--format", "json", "--now", &late]).ok().json();
    for row in json.as_array().unwrap() {
        assert_eq!(row["Due"], true, "{json}");
        assert_eq!(row["LastError"]["Code"], "Acme.Unreachable", "{json}");
        assert_eq!(
            row["LastError"]["At"],
            late.parse::<u64>().unwrap(),
            "{json}"
        );
    }
    let table = status(&["--now", &late]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME "), "{table}");
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[1].contains("due ("), "{table}");
    assert!(lines[1].contains("Acme.Unreachable"), "{table}");
    assert_eq!(
        lines[3], "2 certificate(s): 2 due, 2 whose last renewal failed",
        "{table}"
    );
}
