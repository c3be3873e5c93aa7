//! Finding the token: RFC 7512 URIs with module-path and PIN sources,
//! serial numbers, and what is refused.

use crate::common::{Run, Token, verified_text};

/// `create` with `--token URI` and no `--module`, and no HSM_CSR_PIN.
fn create_by_uri(token: &Token, uri: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = token.hsm_csr();
    cmd.env_remove("HSM_CSR_PIN")
        .envs(env.iter().copied())
        .args([
            "create",
            "--token",
            uri,
            "--label-prefix",
            &token.prefix,
            "--common-name",
            "uri.example",
        ]);
    Run::of(&mut cmd)
}

fn base_uri(token: &Token) -> String {
    if token.token_arg.starts_with("pkcs11:") {
        token.token_arg.clone()
    } else {
        format!("pkcs11:token={}", token.label)
    }
}

#[test]
fn uri_with_module_path_and_pin_source() {
    let token = Token::new();
    let pin = token.dir().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let base = base_uri(&token);
    let module = &token.module;

    let run = create_by_uri(
        &token,
        &format!(
            "{base}?module-path={module}&pin-source=file:{}",
            pin.display()
        ),
        &[],
    )
    .ok();
    verified_text(run.json()["Csr"].as_str().unwrap());

    let run = create_by_uri(
        &token,
        &format!("{base}?module-path={module}&pin-source=env:MY_TOKEN_PIN"),
        &[("MY_TOKEN_PIN", "1234")],
    )
    .ok();
    verified_text(run.json()["Csr"].as_str().unwrap());

    let run = create_by_uri(
        &token,
        &format!("{base}?module-path={module}&pin-value=1234"),
        &[],
    )
    .ok();
    assert!(
        run.stderr.contains("warning: using pin-value="),
        "{}",
        run.stderr
    );
    assert_eq!(token.keys().len(), 6);
}

#[test]
fn serial_number_selects_the_token() {
    let token = Token::new();
    let v = token
        .create(&["--common-name", "serial.example"])
        .ok()
        .json();
    let uri = v["KeyUri"].as_str().unwrap();
    let Some(serial) = uri.split(';').find_map(|p| p.strip_prefix("serial=")) else {
        crate::common::skip(&token, "the module does not report a serial number");
        return;
    };
    let run = create_by_uri(
        &token,
        &format!(
            "pkcs11:serial={serial}?module-path={}&pin-source=env:P",
            token.module
        ),
        &[("P", "1234")],
    );
    run.ok();
    let run = create_by_uri(
        &token,
        &format!(
            "pkcs11:serial=0000{serial}?module-path={}&pin-source=env:P",
            token.module
        ),
        &[("P", "1234")],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("Token.NotFound"), "{}", run.stderr);
}

#[test]
fn refused_selections() {
    let token = Token::new();
    let module = &token.module;
    for (uri, message) in [
        (
            format!("pkcs11:slot-id=1?module-path={module}"),
            "a slot id alone is not stable enough",
        ),
        (
            format!("pkcs11:token=x;colour=red?module-path={module}"),
            "unknown attribute \"colour\"",
        ),
        (
            format!("pkcs11:token=x?module-path={module}&pin-source=file:/nonexistent/pin"),
            "no token \"x\"",
        ),
        ("pkcs11:token=x".to_owned(), "no PKCS#11 module"),
    ] {
        let run = create_by_uri(&token, &uri, &[]);
        assert_eq!(run.code, 3, "{uri}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{uri}: {}", run.stderr);
    }
}
