//! `hsm-csr acme issue|renew` against a private pebble (tests/common/pebble.rs)
//! on loopback, with the key on a private SoftHSM2 token. Every challenge
//! is validated for real: http-01 by pebble fetching from hsm-csr's own
//! responder, dns-01 by pebble resolving the TXT record a hook set in
//! pebble-challtestsrv. Failure paths count the token's objects afterwards
//! with pkcs11-tool.

use std::path::{Path, PathBuf};

use crate::common::pebble::{Pebble, PebbleOptions, free_port};
use crate::common::{Run, Token, openssl};

/// A name [`blocking`]'s pebble refuses (`rejectedIdentifier`).
const BLOCKED: &str = "blocked.example.test";

/// A pebble that refuses [`BLOCKED`].
fn blocking() -> Pebble {
    Pebble::start_with(PebbleOptions {
        domain_blocklist: vec![BLOCKED.to_owned()],
        ..PebbleOptions::default()
    })
}

/// A pebble whose certificates last `secs` seconds.
fn lasting(secs: u64) -> Pebble {
    Pebble::start_with(PebbleOptions {
        cert_lifetime_secs: Some(secs),
        ..PebbleOptions::default()
    })
}

/// A `--dns-01-hook` that publishes the TXT record hsm-csr's hook
/// environment describes in challtestsrv (value `value` instead of the
/// right one when given).
fn dns_hook(ca: &Pebble, value: Option<&str>) -> String {
    let value = value.unwrap_or("$HSM_CSR_ACME_VALIDATION");
    format!(
        "curl -sSf --max-time 10 -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$HSM_CSR_ACME_DOMAIN.\\\",\\\"value\\\":\\\"{value}\\\"}}\" http://127.0.0.1:{}/set-txt",
        ca.challtestsrv_port
    )
}

/// A `--dns-01-cleanup` that removes it.
fn dns_cleanup(ca: &Pebble) -> String {
    format!(
        "curl -sSf --max-time 10 -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$HSM_CSR_ACME_DOMAIN.\\\"}}\" http://127.0.0.1:{}/clear-txt",
        ca.challtestsrv_port
    )
}

/// Private keys and certificates on the token, as pkcs11-tool lists them.
fn objects(token: &Token) -> (usize, usize) {
    let list = token.pkcs11_tool(&["--list-objects"]);
    (
        list.matches("Private Key Object").count(),
        list.matches("Certificate Object").count(),
    )
}

fn account(token: &Token, ca: &Pebble) -> PathBuf {
    token.dir().join(format!(
        "account-{}.json",
        ca.directory_url().len() + ca.http01_port as usize
    ))
}

/// `acme SUB` with the CA, account and token flags, then `args`.
fn acme(token: &Token, ca: &Pebble, sub: &str, args: &[&str]) -> Run {
    let account = account(token, ca);
    let directory = ca.directory_url();
    let ca_root = ca.tls_ca();
    let mut all: Vec<&str> = vec![
        "--directory",
        &directory,
        "--ca-root",
        ca_root.to_str().unwrap(),
        "--account",
        account.to_str().unwrap(),
        "--agree-tos",
        "--label-prefix",
        &token.prefix,
        "--validation-timeout",
        "60",
    ];
    if !args.contains(&"--timeout") {
        all.extend(["--timeout", "20"]);
    }
    all.extend_from_slice(args);
    token.run(&["acme", sub], &all)
}

fn http_01(ca: &Pebble) -> String {
    format!("127.0.0.1:{}", ca.http01_port)
}

/// The MD5 of a PEM certificate's DER public key, as openssl computes it.
fn cert_pub_md5(pem: &str) -> String {
    let pubkey = openssl(&["x509", "-pubkey", "-noout"], pem.as_bytes());
    let der = openssl(&["pkey", "-pubin", "-outform", "DER"], &pubkey);
    let md5 = openssl(&["md5", "-r"], &der);
    String::from_utf8(md5)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The chain file verifies up to pebble's issuing root, and its leaf has
/// the key `pub_md5` names.
fn check_chain(ca: &Pebble, chain: &Path, pub_md5: &str) -> String {
    let pem = std::fs::read_to_string(chain).unwrap();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");
    let dir = chain.parent().unwrap();
    let root = dir.join("issuer-root.pem");
    std::fs::write(&root, ca.issuer_root_pem()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(chain)
        .arg(chain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cert_pub_md5(&pem), pub_md5);
    String::from_utf8(openssl(&["x509", "-noout", "-text"], pem.as_bytes())).unwrap()
}

#[test]
fn rsa_over_http_01_validated_by_pebble_against_hsm_csr() {
    let Some(token) = Token::private_softhsm("pebble issues to its keys") else {
        return;
    };
    let ca = Pebble::start();
    let chain = token.dir().join("chain.pem");
    let run = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "rsa.example.test",
            "--http-01",
            &http_01(&ca),
            "--chain-out",
            chain.to_str().unwrap(),
        ],
    )
    .ok();
    let json = run.json();
    assert_eq!(json["CommonName"], "rsa.example.test");
    assert_eq!(json["ChainPath"], chain.to_str().unwrap());
    assert!(
        json["KeyUri"].as_str().unwrap().starts_with("pkcs11:"),
        "{json}"
    );
    assert!(json["NotAfter"].as_str().unwrap().ends_with('Z'), "{json}");
    let text = check_chain(&ca, &chain, json["PubMd5"].as_str().unwrap());
    assert!(text.contains("DNS:rsa.example.test"), "{text}");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(
        ca.pebble_log().contains("Attempting to validate w/ HTTP"),
        "{}",
        ca.pebble_log()
    );
    assert_eq!(objects(&token), (1, 1), "the key and its certificate");
    let keys = token
        .run(&["keys", "list"], &["--format", "json"])
        .ok()
        .json();
    let key = &keys.as_array().unwrap()[0];
    assert_eq!(key["PubMd5"], json["PubMd5"]);
    assert_eq!(key["Certificate"], true);
    let account = account(&token, &ca);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&account).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the account file holds the account key"
    );
}

#[test]
fn ec_wildcard_over_dns_01_with_hooks() {
    let Some(token) = Token::private_softhsm("pebble issues to its keys") else {
        return;
    };
    let ca = Pebble::start();
    let chain = token.dir().join("chain.pem");
    let run = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "wild.example.test",
            "--sans",
            "wild.example.test,*.wild.example.test",
            "--key-type",
            "ec-p256",
            "--dns-01-hook",
            &dns_hook(&ca, None),
            "--dns-01-cleanup",
            &dns_cleanup(&ca),
            "--chain-out",
            chain.to_str().unwrap(),
        ],
    )
    .ok();
    let json = run.json();
    let text = check_chain(&ca, &chain, json["PubMd5"].as_str().unwrap());
    assert!(text.contains("DNS:*.wild.example.test"), "{text}");
    assert!(text.contains("DNS:wild.example.test"), "{text}");
    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    assert!(
        ca.challtestsrv_log()
            .contains("_acme-challenge.wild.example.test"),
        "{}",
        ca.challtestsrv_log()
    );
    assert_eq!(objects(&token), (1, 1));
}

#[test]
fn an_internationalised_name() {
    let Some(token) = Token::private_softhsm("pebble issues to its keys") else {
        return;
    };
    let ca = Pebble::start();
    let chain = token.dir().join("chain.pem");
    let run = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "bücher.example.test",
            "--http-01",
            &http_01(&ca),
            "--chain-out",
            chain.to_str().unwrap(),
        ],
    )
    .ok();
    let json = run.json();
    assert_eq!(json["CommonName"], "bücher.example.test", "echoed as sent");
    let text = check_chain(&ca, &chain, json["PubMd5"].as_str().unwrap());
    // The CSR names the A-label in the subject CN and the SAN, so the order
    // and the CSR agree and pebble issues.
    assert!(
        text.contains("Subject: CN = xn--bcher-kva.example.test"),
        "{text}"
    );
    assert!(text.contains("DNS:xn--bcher-kva.example.test"), "{text}");
    assert!(!text.contains("bücher"), "{text}");
    assert_eq!(objects(&token), (1, 1));
}

#[test]
fn a_short_lived_certificate_is_renewed_with_a_new_key_once() {
    let Some(token) = Token::private_softhsm("pebble issues to its keys") else {
        return;
    };
    // An hour-long certificate from one CA ...
    let short = lasting(3600);
    let first = acme(
        &token,
        &short,
        "issue",
        &[
            "--common-name",
            "renew.example.test",
            "--key-type",
            "ec-p384",
            "--http-01",
            &http_01(&short),
        ],
    )
    .ok()
    .json();
    drop(short);
    // ... renewed by another, whose certificates last years.
    let ca = Pebble::start();
    let not_due = acme(
        &token,
        &ca,
        "renew",
        &["--days", "0", "--http-01", &http_01(&ca)],
    );
    assert_eq!(
        not_due.code, 10,
        "nothing expires today: {}",
        not_due.stderr
    );
    assert_eq!(not_due.json()["Renewed"].as_array().unwrap().len(), 0);

    let chains = token.dir().join("chains");
    std::fs::create_dir(&chains).unwrap();
    let run = acme(
        &token,
        &ca,
        "renew",
        &[
            "--days",
            "1",
            "--http-01",
            &http_01(&ca),
            "--chain-dir",
            chains.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    let renewed = report["Renewed"].as_array().unwrap();
    assert_eq!(renewed.len(), 1, "{report}");
    let new = &renewed[0];
    assert_eq!(new["CommonName"], "renew.example.test");
    assert_eq!(new["Replaces"]["KeyUri"], first["KeyUri"]);
    assert_eq!(new["Replaces"]["PubMd5"], first["PubMd5"]);
    assert_ne!(
        new["PubMd5"], first["PubMd5"],
        "a new key pair, never the old one"
    );
    let chain = chains.join("renew.example.test.pem");
    assert_eq!(new["ChainPath"], chain.to_str().unwrap());
    let text = check_chain(&ca, &chain, new["PubMd5"].as_str().unwrap());
    assert!(
        text.contains("NIST CURVE: P-384"),
        "the old key's type: {text}"
    );
    assert_eq!(objects(&token), (2, 2), "the old pair and certificate stay");

    // Idempotent: the newest certificate of the name is not due.
    let again = acme(
        &token,
        &ca,
        "renew",
        &["--days", "1", "--http-01", &http_01(&ca)],
    );
    assert_eq!(again.code, 10, "{}", again.stderr);
    assert_eq!(again.json()["NotDue"], 1);
    assert_eq!(objects(&token), (2, 2));
}

/// Runs a failing `issue`; checks code, message and that the token holds
/// nothing afterwards.
fn fails(token: &Token, ca: &Pebble, args: &[&str], exit: i32, expect: &[&str]) {
    let run = acme(token, ca, "issue", args);
    assert_eq!(run.code, exit, "{}", run.stderr);
    for e in expect {
        assert!(run.stderr.contains(e), "{e:?} not in {}", run.stderr);
    }
    assert_eq!(
        objects(token),
        (0, 0),
        "a failed order leaves no key: {}",
        run.stderr
    );
}

#[test]
fn a_refused_order_leaves_no_key() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = blocking();
    fails(
        &token,
        &ca,
        &["--common-name", BLOCKED, "--http-01", &http_01(&ca)],
        2,
        &[
            "Acme.Refused: ACME new order failed",
            "urn:ietf:params:acme:error:rejectedIdentifier",
        ],
    );
}

#[test]
fn a_failed_challenge_leaves_no_key() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = Pebble::start();
    // http-01 served where pebble does not look.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    fails(
        &token,
        &ca,
        &[
            "--common-name",
            "http.example.test",
            "--http-01",
            &elsewhere,
        ],
        2,
        &[
            "Acme.ChallengeFailed: ACME validation failed",
            "http.example.test: urn:ietf:params:acme:error:connection",
        ],
    );
    // dns-01 with the wrong TXT value.
    fails(
        &token,
        &ca,
        &[
            "--common-name",
            "dns.example.test",
            "--dns-01-hook",
            &dns_hook(&ca, Some("wrong")),
            "--dns-01-cleanup",
            &dns_cleanup(&ca),
        ],
        2,
        &[
            "Acme.ChallengeFailed: ACME validation failed",
            "dns.example.test: urn:ietf:params:acme:error:unauthorized",
        ],
    );
    // A hook that fails.
    fails(
        &token,
        &ca,
        &[
            "--common-name",
            "hook.example.test",
            "--dns-01-hook",
            "exit 3",
        ],
        3,
        &[
            "Acme.ResponderFailed: ACME dns-01 hook failed",
            "exit status: 3",
        ],
    );
}

#[test]
fn a_ca_that_stops_answering_leaves_no_key() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = Pebble::start();
    // Nobody listens: fails before any key is made.
    let closed = format!("https://127.0.0.1:{}/dir", free_port());
    let run = token.run(
        &["acme", "issue"],
        &[
            "--directory",
            &closed,
            "--ca-root",
            ca.tls_ca().to_str().unwrap(),
            "--account",
            token.dir().join("closed.json").to_str().unwrap(),
            "--agree-tos",
            "--common-name",
            "closed.example.test",
            "--http-01",
            &http_01(&ca),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Acme.Unreachable: ACME new account failed"),
        "{}",
        run.stderr
    );
    assert_eq!(objects(&token), (0, 0));

    // Something that accepts connections and never answers: the deadline
    // ends the run.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for _ in 0..4 {
            match silent.accept() {
                Ok((stream, _)) => open.push(stream),
                Err(_) => break,
            }
        }
        // Keep them until the test process ends.
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(open);
    });
    drop(held);
    let run = token.run(
        &["acme", "issue"],
        &[
            "--directory",
            &format!("https://127.0.0.1:{port}/dir"),
            "--ca-root",
            ca.tls_ca().to_str().unwrap(),
            "--account",
            token.dir().join("silent.json").to_str().unwrap(),
            "--agree-tos",
            "--timeout",
            "2",
            "--common-name",
            "silent.example.test",
            "--http-01",
            &http_01(&ca),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Acme.Unreachable: ACME new account failed: the CA did not answer within 2s"),
        "{}",
        run.stderr
    );
    assert_eq!(objects(&token), (0, 0));

    // A hook that never ends is killed at its deadline, with what it
    // started; the key goes.
    let pid_file = token.dir().join("hook-child.pid");
    let hook = format!(
        "sleep 60 >/dev/null 2>&1 & echo $! > '{}'; wait",
        pid_file.display()
    );
    fails(
        &token,
        &ca,
        &[
            "--common-name",
            "slow.example.test",
            "--dns-01-hook",
            &hook,
            "--timeout",
            "2",
        ],
        3,
        &["Acme.ResponderFailed: ACME dns-01 hook failed", "killed"],
    );
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the hook's child {pid} outlived it"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // The CA goes away once the key is made and the order placed: the
    // dns-01 hook stops pebble.
    let kill = format!("kill {}", ca.pebble_pid());
    fails(
        &token,
        &ca,
        &["--common-name", "gone.example.test", "--dns-01-hook", &kill],
        1,
        &["Acme.Unreachable: ACME challenge failed"],
    );
}

#[test]
fn a_run_while_another_holds_the_lock_changes_nothing() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = Pebble::start();
    let lock = format!("{}.lock", account(&token, &ca).display());
    // Another run: a process that holds the lock until it is killed (the
    // shell becomes `sleep`, which keeps the locked descriptor).
    let mut holder = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec 9>>'{lock}' && flock 9 && exec sleep 60"))
        .spawn()
        .expect("sh, flock (util-linux)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let free = std::process::Command::new("flock")
            .args(["-n", &lock, "true"])
            .status()
            .unwrap()
            .success();
        if !free {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nobody took {lock}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "lock.example.test",
            "--http-01",
            &http_01(&ca),
        ],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("another hsm-csr acme run holds"),
        "{}",
        run.stderr
    );
    assert_eq!(objects(&token), (0, 0));
    let renew = acme(&token, &ca, "renew", &["--http-01", &http_01(&ca)]);
    assert_eq!(
        renew.code, 10,
        "the lock is gone with its holder: {}",
        renew.stderr
    );
}

#[test]
fn an_account_file_others_can_read_is_refused_before_any_key() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = Pebble::start();
    acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "one.example.test",
            "--http-01",
            &http_01(&ca),
        ],
    )
    .ok();
    use std::os::unix::fs::PermissionsExt;
    let file = account(&token, &ca);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let run = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "two.example.test",
            "--http-01",
            &http_01(&ca),
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("has mode 640"), "{}", run.stderr);
    assert_eq!(objects(&token), (1, 1), "only the first key");
}

#[test]
fn a_failed_renewal_keeps_the_old_pair_and_adds_none() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = lasting(3600);
    let first = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "keep.example.test",
            "--http-01",
            &http_01(&ca),
        ],
    )
    .ok()
    .json();
    // The challenge is served where pebble does not look.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let run = acme(
        &token,
        &ca,
        "renew",
        &["--days", "1", "--http-01", &elsewhere],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.json();
    let failed = report["Failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["Code"], "Acme.ChallengeFailed");
    assert_eq!(failed[0]["Replaces"]["KeyUri"], first["KeyUri"]);
    assert_eq!(report["Renewed"].as_array().unwrap().len(), 0);
    assert_eq!(objects(&token), (1, 1), "the old pair stays, no new one");
}
