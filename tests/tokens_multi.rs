//! One `hsm-csr serve` on two tokens ([[tokens]]): a SoftHSM2 token behind
//! `p11-kit server` (killed and restarted, as in faults.rs) and a second
//! private SoftHSM2 token loaded directly. Under 20 calls a second, the
//! first token goes away: only the calls on it fail, every other call is
//! served by the second token; the first rejoins once its server is back.
//! Each key is on the token its KeyUri names, and only there.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::rpc;
use crate::common::serve_config::ServeConfig;
use crate::common::server::{Launch, Server};
use crate::common::{PIN, SOFTHSM, Token, repo, wait_until};
use crate::faults::{CLIENT_MODULE, Cleanup, kill_p11kit, load_client, start_p11kit};

/// A second private SoftHSM2 token, labelled `token-b`, in `dir`; its
/// SOFTHSM2_CONF.
fn second_token(dir: &std::path::Path) -> std::path::PathBuf {
    let store = dir.join("store-b");
    let status = Command::new("bash")
        .arg(repo().join("scripts/make-softhsm-token.sh"))
        .arg(&store)
        .arg("token-b")
        .env("TOKEN_PIN", PIN)
        .status()
        .unwrap();
    assert!(status.success(), "make-softhsm-token.sh token-b");
    store.join("softhsm2.conf")
}

/// A bare GET: (status, body); (0, "") when the server cannot be reached.
fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// The value of the series `name{token="i",label=...[,result="r"]}`.
fn token_series(addr: &str, name: &str, token: usize, result: Option<&str>) -> f64 {
    let (_, text) = get(addr, "/metrics");
    let head = format!("{name}{{token=\"{token}\",");
    text.lines()
        .filter(|l| l.starts_with(&head))
        .filter(|l| result.is_none_or(|r| l.contains(&format!("result=\"{r}\""))))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn served_on(addr: &str, token: usize) -> f64 {
    token_series(addr, "hsm_csr_token_calls_total", token, Some("ok"))
}

/// `/healthz`: (status, the token's entry in `Tokens`).
fn token_health(addr: &str, token: usize) -> (u16, serde_json::Value) {
    let (status, body) = get(addr, "/healthz");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    (status, v["Tokens"][token].clone())
}

/// One signed call with KeyUri disclosed: (token label, CKA_ID hex) of its key.
fn call_with_key_uri(addr: &str) -> (String, String) {
    let answer = rpc::get(
        addr,
        &rpc::signed_query("MainKey", "s3cret", &[("CommonName", "m.example.com")]),
    );
    assert_eq!(answer.code, "OK", "{}", answer.body);
    let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let uri = v["KeyUri"].as_str().expect("KeyUri").to_owned();
    let attr = |name: &str| {
        uri.trim_start_matches("pkcs11:")
            .split(';')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {uri}"))
            .to_owned()
    };
    (attr("token"), attr("id").replace('%', ""))
}

/// The CKA_IDs (hex) of the private keys on a SoftHSM token, by pkcs11-tool.
fn private_key_ids(conf: &std::path::Path, label: &str) -> Vec<String> {
    let out = Command::new("pkcs11-tool")
        .args(["--module", SOFTHSM, "--token-label", label, "--login"])
        .args(["--pin", PIN, "--list-objects", "--type", "privkey"])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .expect("pkcs11-tool (apt-get install opensc)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ID:"))
        .map(|id| id.trim().to_ascii_lowercase())
        .collect()
}

#[test]
fn two_tokens_one_killed_under_load_only_its_calls_fail_and_it_rejoins() {
    let Some(a) = Token::private_softhsm("kills one of two private tokens behind p11-kit server")
    else {
        return;
    };
    let b_conf = second_token(a.dir());
    let (address, pid) = start_p11kit(&a);
    let mut cleanup = Cleanup {
        p11kit: vec![pid.clone()],
    };
    let server = Server::launch_on(
        &a,
        &ServeConfig::for_token(&a)
            .token(CLIENT_MODULE, "test-token")
            .token(SOFTHSM, "token-b")
            .service("workers = 4\nkey_uri = true")
            .access_key("MainKey", "MAIN_SECRET", "[\"*\"]"),
        &Launch {
            env: &[
                ("SOFTHSM2_CONF", b_conf.to_str().unwrap()),
                ("P11_KIT_SERVER_ADDRESS", &address),
            ],
            ..Launch::default()
        },
    );
    let addr = server.addr.clone();
    wait_until("serve did not come up", || get(&addr, "/healthz").0 == 200);
    for token in [0, 1] {
        assert_eq!(token_series(&addr, "hsm_csr_token_up", token, None), 1.0);
        assert_eq!(
            token_series(&addr, "hsm_csr_token_sessions", token, None),
            2.0
        );
    }
    let sessions_on_a = 2.0;

    // 20 calls a second for 10 s; token A goes away once both tokens have
    // served calls, and comes back once B alone has served a second's worth.
    let load = Command::new(load_client())
        .args([&addr, "rate", "20", "10"])
        .env("LOAD_AK_ID", "MainKey")
        .env("LOAD_AK_SECRET", "s3cret")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the load did not reach both tokens", || {
        served_on(&addr, 0) >= 3.0 && served_on(&addr, 1) >= 3.0
    });
    kill_p11kit(&pid);
    wait_until("token A never left the rotation", || {
        token_series(&addr, "hsm_csr_token_up", 0, None) == 0.0
    });
    let (status, a_health) = token_health(&addr, 0);
    assert_eq!(status, 200, "token B still serves: {a_health}");
    assert_eq!(a_health["Token"], "unreachable", "{a_health}");
    assert_eq!(token_health(&addr, 1).1["Token"], "reachable");
    let on_a_while_down = served_on(&addr, 0);
    let on_b = served_on(&addr, 1);
    wait_until("token B did not take the load", || {
        served_on(&addr, 1) >= on_b + 20.0
    });
    assert_eq!(
        served_on(&addr, 0),
        on_a_while_down,
        "no call on the dead token"
    );

    let (_, pid) = start_p11kit(&a);
    cleanup.p11kit.push(pid.clone());
    wait_until("token A did not rejoin", || {
        token_series(&addr, "hsm_csr_token_up", 0, None) == 1.0
    });
    assert_eq!(token_health(&addr, 0).1["Token"], "reachable");
    let load = load.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&load.stdout).unwrap();
    eprintln!("20 calls/s over two tokens, one killed and restarted: {summary}");

    // Only the calls on token A when it went away failed, and said so.
    let failed_on_a = token_series(&addr, "hsm_csr_token_calls_total", 0, Some("failed"));
    let errors = summary["errors"].as_u64().unwrap() as f64;
    assert!(
        (1.0..=sessions_on_a).contains(&errors) && errors == failed_on_a,
        "failures must be the calls in flight on token A (at most {sessions_on_a}): {summary}, failed on A {failed_on_a}"
    );
    for (code, n) in summary["codes"].as_object().unwrap() {
        assert!(
            code == "ok" || code == "ServiceUnavailable",
            "{n} x {code}: {summary}"
        );
    }
    assert_eq!(
        token_series(&addr, "hsm_csr_token_calls_total", 1, Some("failed")),
        0.0
    );

    // Back in rotation: idle tokens take calls in turn, so calls land on both.
    let before = (served_on(&addr, 0), served_on(&addr, 1));
    let mut made = Vec::new();
    for _ in 0..4 {
        made.push(call_with_key_uri(&addr));
    }
    assert!(
        served_on(&addr, 0) > before.0 && served_on(&addr, 1) > before.1,
        "calls after the rejoin: {made:?}"
    );

    let served = (served_on(&addr, 0) as usize, served_on(&addr, 1) as usize);
    let log = server.stop();
    assert!(log.contains("is back: sessions reopened"), "{log}");

    // Each key is on the token its KeyUri names, and only there.
    let on_a = private_key_ids(&a.conf(), "test-token");
    let on_b = private_key_ids(&b_conf, "token-b");
    for (token, id) in &made {
        let (here, there) = match token.as_str() {
            "test-token" => (&on_a, &on_b),
            "token-b" => (&on_b, &on_a),
            other => panic!("KeyUri names token {other:?}"),
        };
        assert!(here.contains(id), "{id} not on {token}: {here:?}");
        assert!(!there.contains(id), "{id} also on the other token");
    }
    // Every delivered CSR left one key pair, on the token that served it.
    let ok = summary["ok"].as_u64().unwrap() as usize + made.len();
    assert_eq!(served.0 + served.1, ok, "{log}");
    assert_eq!((on_a.len(), on_b.len()), served, "{log}");
    kill_p11kit(&pid);
}

/// Adds a token labelled `label` to `token`'s private SoftHSM store, so
/// that one module (one SOFTHSM2_CONF) holds two tokens.
fn add_token(token: &Token, label: &str) {
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", "12345678", "--pin", PIN])
        .env("SOFTHSM2_CONF", token.conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two tokens of one module: `serve` keeps a key pool on each, and hands
/// out each pool's keys with a KeyUri naming the token they are on; the
/// other commands work on the one `--token` picks, with that table's
/// module and pin file; a misconfigured [[tokens]] is refused before any
/// call is served.
#[test]
fn a_pool_on_each_token_and_one_token_per_command() {
    let Some(a) = Token::private_softhsm("adds a second token to a private SoftHSM store") else {
        return;
    };
    add_token(&a, "token-b");
    std::fs::write(a.dir().join("pin"), format!("{PIN}\n")).unwrap();
    let two = ServeConfig::for_token(&a)
        .token(SOFTHSM, "test-token")
        .token(SOFTHSM, "token-b")
        .service("workers = 2\nkey_uri = true")
        .access_key("MainKey", "MAIN_SECRET", "[\"*\"]");
    let config = two.write(a.dir());
    let run = |args: &[&str]| {
        let mut cmd = a.hsm_csr();
        cmd.env_remove("HSM_CSR_PIN")
            .env("MAIN_SECRET", "s3cret")
            .args(args)
            .arg("--config")
            .arg(&config);
        crate::common::Run::of(&mut cmd)
    };

    // create works on one token: --token picks it, its table gives the rest.
    let refused = run(&["create", "--common-name", "x.example.com"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("Config.Invalid")
            && refused.stderr.contains("\"test-token\", \"token-b\"")
            && refused.stderr.contains("--token"),
        "{}",
        refused.stderr
    );
    let made = run(&[
        "create",
        "--token",
        "token-b",
        "--common-name",
        "b.example.com",
    ])
    .ok();
    let uri = made.json()["KeyUri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("pkcs11:token=token-b;"), "{uri}");
    let id = uri
        .split("id=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .replace('%', "");
    assert!(private_key_ids(&a.conf(), "token-b").contains(&id));
    assert!(private_key_ids(&a.conf(), "test-token").is_empty());
    let serial_b = uri
        .split("serial=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    // serve refuses flags meant for one token, and one token listed twice.
    let e = run(&["serve", "--module", SOFTHSM]);
    assert!(
        e.code != 0 && e.stderr.contains("--module and --pin-file name one token"),
        "{}",
        e.stderr
    );
    // The third table names token-b again, by its serial.
    let twice = two
        .clone()
        .token_table(&format!(
            "module = \"{SOFTHSM}\"\nserial = \"{serial_b}\"\npin_file = \"pin\"\n"
        ))
        .write(a.dir());
    let mut cmd = a.hsm_csr();
    cmd.env_remove("HSM_CSR_PIN")
        .env("MAIN_SECRET", "s3cret")
        .args(["serve", "--config"])
        .arg(&twice);
    let e = crate::common::Run::of(&mut cmd);
    assert!(
        e.code == 3
            && e.stderr
                .contains("number 2 and number 3 reach the same token"),
        "{}",
        e.stderr
    );

    // A pool on each token; pooled keys are handed out from both.
    let server = Server::launch_on(&a, &two.pool(2), &Launch::default());
    let addr = server.addr.clone();
    wait_until("both pools did not fill", || {
        token_series(&addr, "hsm_csr_token_pool_depth", 0, None) == 2.0
            && token_series(&addr, "hsm_csr_token_pool_depth", 1, None) == 2.0
    });
    let calls: Vec<(String, String)> = (0..4).map(|_| call_with_key_uri(&addr)).collect();
    let (_, metrics) = get(&addr, "/metrics");
    assert!(
        metrics.contains("\nhsm_csr_pool_hits_total 4\n"),
        "all four calls from the pools: {metrics}"
    );
    let log = server.stop();
    let on_a = private_key_ids(&a.conf(), "test-token");
    let on_b = private_key_ids(&a.conf(), "token-b");
    for (token, id) in &calls {
        let (here, there) = if token == "test-token" {
            (&on_a, &on_b)
        } else {
            (&on_b, &on_a)
        };
        assert!(
            here.contains(id) && !there.contains(id),
            "{token} {id}: {log}"
        );
    }
    let tokens: std::collections::BTreeSet<&str> = calls.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tokens.len(), 2, "pooled calls from both tokens: {calls:?}");
}
