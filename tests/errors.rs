//! Bad requests, bad tokens, bad PINs: exit code, API code and a message
//! that says what to fix. Never a panic, never a PIN in the output.

use crate::common::{PIN, Run, Token};

#[track_caller]
fn assert_error(run: &Run, exit: i32, code: &str, message: &str) {
    assert_eq!(run.code, exit, "stderr: {}", run.stderr);
    // The last line: modules (tpm2-pkcs11) may print lines of their own first.
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("{code}: ")),
        "stderr: {}",
        run.stderr
    );
    assert!(last.contains(message), "stderr: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let body = run.json();
    assert_eq!(body["Code"], code);
    assert!(body["Message"].as_str().unwrap().contains(message));
    assert_eq!(body["RequestId"].as_str().unwrap().len(), 36);
}

/// `hsm-csr create` on `token` with the PIN environment replaced.
fn create_with_pin(token: &Token, pin: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = token.hsm_csr();
    match pin {
        Some(p) => cmd.env("HSM_CSR_PIN", p),
        None => cmd.env_remove("HSM_CSR_PIN"),
    };
    cmd.arg("create").args(token.token_flags()).args(args);
    Run::of(&mut cmd)
}

#[test]
fn bad_country_is_a_400_style_error_and_makes_no_key() {
    let token = Token::new();
    let run = token.create(&["--common-name", "a.example", "--country", "CHN"]);
    assert_error(
        &run,
        2,
        "InvalidValue.Malformed",
        "Country must be 2 characters.",
    );
    assert!(token.keys().is_empty());
}

#[test]
fn empty_or_missing_common_name() {
    let token = Token::new();
    assert_error(
        &token.create(&["--common-name", " "]),
        2,
        "MissingCommonName",
        "CommonName",
    );
    // Without the flag, clap names it (tests/trips.rs).
}

#[test]
fn malformed_fields_name_the_field() {
    let token = Token::new();
    let long = "x".repeat(65);
    for (args, message) in [
        (
            vec!["--common-name", long.as_str()],
            "CommonName must be at most 64 characters",
        ),
        (
            vec!["--common-name", "a.example", "--sans", "a.example,bad name"],
            "SANs entry \"bad name\"",
        ),
        (
            vec!["--common-name", "a.example", "--email", "nobody"],
            "Email \"nobody\"",
        ),
    ] {
        assert_error(&token.create(&args), 2, "InvalidValue.Malformed", message);
    }
}

#[test]
fn wrong_pin_is_reported_once_and_not_echoed() {
    // Shared tokens count failed logins towards a lockout.
    let Some(token) = Token::private_softhsm("a wrong PIN counts towards the token's lockout")
    else {
        return;
    };
    let run = create_with_pin(&token, Some("98765"), &["--common-name", "a.example"]);
    assert_error(&run, 3, "Token.PinIncorrect", "not retried");
    assert!(!run.stderr.contains("98765") && !run.stdout.contains("98765"));
    // The right PIN still works: one failed attempt did not lock the token.
    token.create(&["--common-name", "a.example"]).ok();
}

#[test]
fn missing_module() {
    let token = Token::new();
    // A path that does not exist, and a file that is not a PKCS#11 module.
    for (module, message) in [
        ("/usr/lib/nope/libnothing.so", "/usr/lib/nope/libnothing.so"),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", "libc.so.6"),
    ] {
        let mut cmd = token.hsm_csr();
        cmd.args([
            "create",
            "--module",
            module,
            "--token",
            "x",
            "--common-name",
            "a.example",
        ]);
        assert_error(&Run::of(&mut cmd), 3, "Token.ModuleNotLoadable", message);
    }
}

#[test]
fn unknown_token_lists_the_present_ones() {
    let token = Token::new();
    let mut cmd = token.hsm_csr();
    cmd.args([
        "create",
        "--module",
        &token.module,
        "--token",
        "no-such-token",
        "--common-name",
        "a.example",
    ]);
    let run = Run::of(&mut cmd);
    assert_error(&run, 3, "Token.NotFound", "no token \"no-such-token\"");
    if token.is_private_softhsm() {
        assert!(
            run.stderr.contains("tokens present: \"test-token\""),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn no_pin_source_off_a_terminal() {
    let token = Token::new();
    let run = create_with_pin(&token, None, &["--common-name", "a.example"]);
    assert_error(&run, 3, "Token.PinRequired", "HSM_CSR_PIN");
}

#[test]
fn pin_file_errors() {
    let token = Token::new();
    let empty = token.dir().join("empty-pin");
    std::fs::write(&empty, "").unwrap();
    let run = create_with_pin(
        &token,
        None,
        &[
            "--common-name",
            "a.example",
            "--pin-file",
            empty.to_str().unwrap(),
        ],
    );
    assert_error(&run, 3, "Config.Invalid", "is empty");
}

#[test]
fn config_errors() {
    let token = Token::new();
    let config = token.dir().join("bad.toml");
    std::fs::write(&config, "[token]\npin = \"1234\"\n").unwrap();
    let mut cmd = token.hsm_csr();
    cmd.args(["create", "--common-name", "a.example", "--config"])
        .arg(&config);
    let run = Run::of(&mut cmd);
    assert_error(&run, 3, "Config.Invalid", "unknown field `pin`");
    assert!(
        !run.stderr.contains("1234"),
        "the PIN was echoed: {}",
        run.stderr
    );

    let mut cmd = token.hsm_csr();
    cmd.args(["create", "--common-name", "a.example", "--token", "x"]);
    assert_error(&Run::of(&mut cmd), 3, "Config.Invalid", "no PKCS#11 module");
}

#[test]
fn pem_format_errors_go_to_stderr_only() {
    let token = Token::new();
    let run = token.create(&[
        "--common-name",
        "a.example",
        "--country",
        "C",
        "--format",
        "pem",
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stdout.is_empty());
    assert_eq!(
        run.stderr.trim(),
        "InvalidValue.Malformed: Country must be 2 characters."
    );
}

#[test]
fn usage_errors_exit_2() {
    let token = Token::new();
    let run = token.create(&["--common-name", "a.example", "--key-size", "1024"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let mut cmd = token.hsm_csr();
    cmd.args(["create", "--pin", PIN]);
    assert_eq!(Run::of(&mut cmd).code, 2, "there is no --pin flag");
}

/// Runs `cmd` for at most 20 s; what it did, or a failure naming it if it
/// was still running (it hung).
fn run_within(cmd: &mut std::process::Command, what: &str) -> Run {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(out) => {
            let out = out.unwrap();
            Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} hung for 20 s");
        }
    }
}

#[test]
fn fifos_and_devices_where_a_file_is_meant_are_refused_at_once() {
    let token = Token::new();
    let fifo = token.dir().join("fifo");
    crate::common::mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    for (name, file) in [("FIFO", fifo), ("/dev/zero", "/dev/zero")] {
        // The PIN file.
        let mut cmd = token.hsm_csr();
        cmd.env_remove("HSM_CSR_PIN")
            .arg("create")
            .args(token.token_flags())
            .args(["--common-name", "a.example", "--pin-file", file]);
        let run = run_within(&mut cmd, &format!("--pin-file {name}"));
        assert_error(&run, 3, "Config.Invalid", "is not a regular file");
        // The config file.
        let mut cmd = token.hsm_csr();
        cmd.args(["create", "--common-name", "a.example", "--config", file]);
        let run = run_within(&mut cmd, &format!("--config {name}"));
        assert_error(&run, 3, "Config.Invalid", "is not a regular file");
        // batch --input.
        let mut cmd = token.hsm_csr();
        cmd.arg("batch")
            .args(token.token_flags())
            .args(["--input", file]);
        let run = run_within(&mut cmd, &format!("batch --input {name}"));
        assert_eq!(run.code, 3, "{}", run.stderr);
        assert!(
            run.stderr.contains("Config.Invalid") && run.stderr.contains("is not a regular file"),
            "{}",
            run.stderr
        );
    }
    // Standard input stays a way to feed batch, read up to its bound.
    let mut cmd = token.hsm_csr();
    cmd.arg("batch")
        .args(token.token_flags())
        .args(["--input", "-", "--label-prefix", &token.prefix])
        .stdin(std::process::Stdio::piped());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"CommonName\":\"stdin.example\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"CommonName\":\"stdin.example\""));
}
