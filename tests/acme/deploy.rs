//! `--deploy-hook`: run after each certificate is stored, told what it
//! needs in its environment (not the PIN), ended with all it started; a
//! failure is reported and keeps the certificate.

use super::{acme, http_01_anywhere, objects, unix};
use crate::common::Token;
use crate::common::a2c::{A2cOptions, Acme2Certifier};

/// `NAME=value` lines a hook wrote with `env`, as a map.
fn read_env(path: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn the_deploy_hook_is_told_each_new_certificate_and_a_failure_keeps_it() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    let ca = Acme2Certifier::start(&A2cOptions::default());
    let responder = http_01_anywhere();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    // Writes its environment, and leaves a child behind in its group.
    let hook = format!(
        "env | grep ^HSM_CSR_ > {o}/$HSM_CSR_PUB_MD5.env; sleep 300 & echo $! > {o}/$HSM_CSR_PUB_MD5.child"
    );
    let chain = out.path().join("chain.pem");
    let issued = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "deploy.example.test",
            "--sans",
            "deploy.example.test,www.deploy.example.test",
            "--http-01",
            &responder,
            "--chain-out",
            chain.to_str().unwrap(),
            "--deploy-hook",
            &hook,
        ],
    )
    .ok()
    .json();
    let md5 = issued["PubMd5"].as_str().unwrap();
    let env = read_env(&out.path().join(format!("{md5}.env")));
    assert_eq!(env["HSM_CSR_COMMON_NAME"], "deploy.example.test");
    assert_eq!(
        env["HSM_CSR_NAMES"],
        "deploy.example.test www.deploy.example.test"
    );
    assert_eq!(env["HSM_CSR_KEY_URI"], issued["KeyUri"].as_str().unwrap());
    assert_eq!(env["HSM_CSR_PUB_MD5"], md5);
    assert_eq!(env["HSM_CSR_CHAIN_PATH"], chain.to_str().unwrap());
    assert_eq!(env["HSM_CSR_REPLACED_KEY_URI"], "");
    // notAfter as the chain says it, to the second.
    let end = crate::common::openssl(
        &["x509", "-noout", "-enddate"],
        &std::fs::read(&chain).unwrap(),
    );
    let end = String::from_utf8(end).unwrap();
    assert_eq!(
        env["HSM_CSR_NOT_AFTER"],
        unix(end.trim().trim_start_matches("notAfter=")).to_string()
    );
    assert!(!env.contains_key("HSM_CSR_PIN"), "{env:?}");
    // What the hook left running in its group was ended with it.
    let child = std::fs::read_to_string(out.path().join(format!("{md5}.child"))).unwrap();
    let stat = std::path::Path::new("/proc")
        .join(child.trim())
        .join("cmdline");
    let cmdline = std::fs::read(&stat).unwrap_or_default();
    assert!(
        !cmdline.starts_with(b"sleep"),
        "the hook's child still runs"
    );

    // A renewal is told what it replaces; a failing hook is reported, exit
    // 3, and the new certificate stays on the token.
    let late = (env["HSM_CSR_NOT_AFTER"].parse::<u64>().unwrap() - 60).to_string();
    let failing = format!("env | grep ^HSM_CSR_ > {o}/renewed.env; echo reload failed >&2; exit 4");
    let run = acme(
        &token,
        &ca,
        "renew",
        &[
            "--http-01",
            &responder,
            "--now",
            &late,
            "--deploy-hook",
            &failing,
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("reload failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("Acme.DeployHookFailed"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["Renewed"][0]["Replaces"]["KeyUri"], issued["KeyUri"]);
    assert!(
        report["Renewed"][0]["DeployHookError"]
            .as_str()
            .unwrap()
            .contains("exit status: 4"),
        "{report}"
    );
    let env = read_env(&out.path().join("renewed.env"));
    assert_eq!(
        env["HSM_CSR_REPLACED_KEY_URI"],
        issued["KeyUri"].as_str().unwrap()
    );
    assert_eq!(
        env["HSM_CSR_KEY_URI"],
        report["Renewed"][0]["KeyUri"].as_str().unwrap()
    );
    assert_eq!(objects(&token), (2, 2));
    // The next run finds nothing due: the renewal was kept.
    let run = acme(&token, &ca, "renew", &["--http-01", &responder]);
    assert_eq!(run.code, 10, "{}", run.stderr);

    // A hook that outruns its deadline is killed, and says so.
    let later = (unix(report["Renewed"][0]["NotAfter"].as_str().unwrap()) - 60).to_string();
    let run = acme(
        &token,
        &ca,
        "renew",
        &[
            "--http-01",
            &responder,
            "--now",
            &later,
            "--deploy-hook",
            "sleep 60",
            "--deploy-hook-timeout",
            "1",
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("still ran after 1s"), "{}", run.stderr);
    assert_eq!(objects(&token), (3, 3));
}
