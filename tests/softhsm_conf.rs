//! The quick start's trap: SoftHSM2 finds a private token store only through
//! SOFTHSM2_CONF. Without it (or with a wrong one) the error must say so,
//! instead of a bare "tokens present: none". And SoftHSM2 before 2.7.0
//! spoils keys a second process reads: `serve` says so at start.

use crate::common::{Run, Token};

/// `create` on the private token's label with SOFTHSM2_CONF as given
/// (None: unset).
fn create(token: &Token, conf: Option<&std::path::Path>) -> Run {
    let mut cmd = token.hsm_csr();
    match conf {
        Some(c) => cmd.env("SOFTHSM2_CONF", c),
        None => cmd.env_remove("SOFTHSM2_CONF"),
    };
    cmd.args(["create", "--format", "json", "--common-name", "a.example"])
        .args(token.token_flags());
    Run::of(&mut cmd)
}

#[track_caller]
fn assert_hint(run: &Run, hint: &str) {
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("Token.NotFound: ") || last.starts_with("Token.ModuleNotLoadable: "),
        "stderr: {}",
        run.stderr
    );
    assert!(last.contains(hint), "no {hint:?} in: {last}");
    // The JSON body carries the same advice.
    let body = run.json();
    assert!(body["Message"].as_str().unwrap().contains(hint), "{body}");
}

#[test]
fn without_softhsm2_conf_the_error_says_to_export_it() {
    let Some(token) = Token::private_softhsm("runs without SOFTHSM2_CONF") else {
        return;
    };
    // SoftHSM2 falls back to /etc/softhsm/softhsm2.conf: as root it finds
    // no such token there (Token.NotFound), as another user it cannot read
    // the file (Token.ModuleNotLoadable). Both must name the variable.
    let run = create(&token, None);
    assert_hint(&run, "export SOFTHSM2_CONF=");
    assert!(
        run.stderr.contains("SOFTHSM2_CONF is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_empty_store_is_named_with_its_softhsm2_conf() {
    let Some(token) = Token::private_softhsm("points SOFTHSM2_CONF at an empty store") else {
        return;
    };
    let empty = token.dir().join("empty");
    std::fs::create_dir_all(empty.join("tokens")).unwrap();
    let conf = empty.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            empty.join("tokens").display()
        ),
    )
    .unwrap();
    let run = create(&token, Some(&conf));
    assert_hint(
        &run,
        &format!(
            "SOFTHSM2_CONF={:?} names a token store that holds no initialised token",
            conf
        ),
    );
    assert!(
        run.stderr.contains("tokens present: none"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreadable_softhsm2_conf_is_named() {
    let Some(token) = Token::private_softhsm("points SOFTHSM2_CONF at a missing file") else {
        return;
    };
    let missing = token.dir().join("no-such-softhsm2.conf");
    let run = create(&token, Some(&missing));
    assert_hint(&run, &format!("check SOFTHSM2_CONF={missing:?}"));
}

#[test]
fn a_wrong_label_in_the_right_store_gets_no_softhsm2_conf_hint() {
    let Some(token) = Token::private_softhsm("compares with the same store") else {
        return;
    };
    // The right store, a wrong label: the label is the mistake, not the store.
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
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("tokens present: \"test-token\""),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("SOFTHSM2_CONF"), "{}", run.stderr);
}

/// `serve` on SoftHSM2 before 2.7.0 says once, at start, that another
/// process reading the token can spoil keys being made (SoftHSM issue
/// #573); the version is what `softhsm2-util --version` prints.
#[test]
fn serve_on_softhsm_before_2_7_warns_of_other_processes_once() {
    let Some(token) = Token::private_softhsm("reads the installed SoftHSM2's own version") else {
        return;
    };
    let version = std::process::Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let before_2_7 = (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (2, 7);
    let server = crate::common::server::Server::start(&token, token.ec_or_rsa(), "");
    let log = server.stop();
    let warned = log.matches("issue #573").count();
    assert_eq!(warned, usize::from(before_2_7), "SoftHSM {version}: {log}");
}
