//! The token goes away under `hsm-csr serve`, while the repo's load client
//! (examples/load.rs) keeps calling, and comes back: SoftHSM2 behind
//! `p11-kit server`, whose server processes are killed and restarted.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::serve_config::ServeConfig;
use crate::common::server::{Launch, Server};
use crate::common::spy::{self, SPY};
use crate::common::{SOFTHSM, Token, python, wait_until};

pub(crate) const CLIENT_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

/// `p11-kit server` for the private token; returns the client address and
/// the server's pid.
pub(crate) fn start_p11kit(token: &Token) -> (String, String) {
    let sock = token.dir().join("p11kit.sock");
    let _ = std::fs::remove_file(&sock);
    let out = Command::new("p11-kit")
        .args(["server", "--provider", SOFTHSM, "-n"])
        .arg(&sock)
        .args(["-s", "pkcs11:token=test-token"])
        .env("SOFTHSM2_CONF", token.conf())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("p11-kit (apt-get install p11-kit p11-kit-modules)");
    assert!(out.status.success(), "p11-kit server did not start");
    // It prints `P11_KIT_SERVER_PID=123; export P11_KIT_SERVER_PID;`.
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = printed
        .split(';')
        .find_map(|p| p.trim().strip_prefix("P11_KIT_SERVER_PID="))
        .expect("p11-kit server printed its pid")
        .to_owned();
    (format!("unix:path={}", sock.display()), pid)
}

/// Kills the server and the connection handlers (`p11-kit-remote`) it forked.
pub(crate) fn kill_p11kit(pid: &str) {
    let _ = Command::new("pkill").args(["-KILL", "-P", pid]).status();
    let _ = Command::new("kill").args(["-KILL", pid]).status();
}

/// `hsm-csr serve` with pkcs11-spy in front of p11-kit's client (its
/// log: `spy.log`), which reaches the token through the p11-kit server at
/// `address`.
fn serve(token: &Token, address: &str) -> Server {
    let spy_log = token.dir().join("spy.log");
    Server::launch_on(
        token,
        &ServeConfig::for_token(token)
            .module(SPY)
            .service("workers = 2")
            .access_key("MainKey", "MAIN_SECRET", "[\"*\"]"),
        &Launch {
            env: &[
                ("P11_KIT_SERVER_ADDRESS", address),
                ("PKCS11SPY", CLIENT_MODULE),
                ("PKCS11SPY_OUTPUT", spy_log.to_str().unwrap()),
            ],
            ..Launch::default()
        },
    )
}

/// One request through the SDK: Ok(PubMd5) or Err(code).
fn one(addr: &str) -> Result<String, String> {
    let out = Command::new(python())
        .arg("-c")
        .arg(
            "import sys,json\n\
             from alibabacloud_cdn20180510.client import Client\n\
             from alibabacloud_cdn20180510 import models\n\
             from alibabacloud_tea_openapi import models as om\n\
             c=Client(om.Config(access_key_id='MainKey',access_key_secret='s3cret',endpoint=sys.argv[1],protocol='http'))\n\
             try:\n  print('ok', c.create_cdn_certificate_signing_request(models.CreateCdnCertificateSigningRequestRequest(common_name='f.example.com')).body.pub_md_5)\n\
             except Exception as e:\n  print('err', e.code)\n",
        )
        .arg(addr)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match said.split_once(' ') {
        Some(("ok", md5)) => Ok(md5.to_owned()),
        Some((_, code)) => Err(code.to_owned()),
        None => Err(format!(
            "no answer: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Kills the p11-kit servers a failed assertion would leave running.
pub(crate) struct Cleanup {
    pub(crate) p11kit: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in &self.p11kit {
            kill_p11kit(pid);
        }
    }
}

/// examples/load.rs, which `cargo test` builds next to the test binary.
pub(crate) fn load_client() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let client = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples/load");
    assert!(
        client.exists(),
        "{} is missing: run `cargo test` (which builds the examples), or `cargo build --example load`",
        client.display()
    );
    client
}

/// A bare GET; the response, empty when the server cannot be reached.
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn healthy(addr: &str) -> bool {
    get(addr, "/healthz").starts_with("HTTP/1.1 200")
}

/// The calls answered so far, from /metrics: (with code OK, with any other
/// code).
fn answered(addr: &str) -> (f64, f64) {
    let (mut ok, mut other) = (0.0, 0.0);
    for line in get(addr, "/metrics").lines() {
        let Some((labels, n)) = line
            .strip_prefix("hsm_csr_requests_total{")
            .and_then(|l| l.rsplit_once(' '))
        else {
            continue;
        };
        let n: f64 = n.parse().unwrap_or(0.0);
        if labels.contains("code=\"OK\"") {
            ok += n;
        } else {
            other += n;
        }
    }
    (ok, other)
}

#[test]
fn token_lost_under_serve_fails_clearly_and_recovers_without_restart() {
    let Some(token) =
        Token::private_softhsm("runs its own p11-kit server in front of a private SoftHSM token")
    else {
        return;
    };
    let (address, pid) = start_p11kit(&token);
    let mut cleanup = Cleanup {
        p11kit: vec![pid.clone()],
    };
    let server = serve(&token, &address);
    let addr = server.addr.clone();
    wait_until("serve did not come up", || healthy(&addr));
    let mut delivered = vec![one(&addr).expect("before the fault")];

    // 20 calls a second for 8 s; the token goes away once the load has had
    // answers, and comes back once the load has seen it gone.
    let load = Command::new(load_client())
        .args([&addr, "rate", "20", "8"])
        .env("LOAD_AK_ID", "MainKey")
        .env("LOAD_AK_SECRET", "s3cret")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the load got no answers", || answered(&addr).0 >= 6.0);
    kill_p11kit(&pid);
    wait_until("healthz kept reporting the token reachable", || {
        !healthy(&addr)
    });
    // While the token is gone: clear errors, never a hang or a crash.
    for _ in 0..3 {
        let code = one(&addr).expect_err("the token is gone");
        assert!(
            ["Internal.Error", "ServiceUnavailable"].contains(&code.as_str()),
            "{code}"
        );
    }
    assert!(!healthy(&addr), "healthz must report the token unreachable");
    // Besides the three calls above, at least one of the load's failed.
    wait_until("the load never saw the token gone", || {
        answered(&addr).1 >= 4.0
    });

    let (_, pid) = start_p11kit(&token);
    cleanup.p11kit.push(pid.clone());
    wait_until("serve did not reconnect to the token", || healthy(&addr));
    for _ in 0..2 {
        delivered.push(one(&addr).expect("after the token came back"));
    }
    let load = load.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&load.stdout).unwrap();
    let codes = summary["codes"].as_object().unwrap();
    for code in codes.keys() {
        assert!(
            code == "ok" || code == "ServiceUnavailable" || code.starts_with("Internal."),
            "under load, while the token was gone: {summary}"
        );
    }
    eprintln!("load while the token went away and came back: {summary}");
    let load_ok = summary["ok"].as_u64().unwrap() as usize;
    assert!(
        load_ok > 0 && summary["errors"].as_u64().unwrap() > 0,
        "the load saw the token before, during and after the outage: {summary}"
    );

    let log = server.stop();
    kill_p11kit(&pid);
    assert!(log.contains("is back: sessions reopened"), "{log}");
    for line in log.lines().filter(|l| l.contains("removed")) {
        eprintln!("serve: {line}");
    }
    // What the first connection learned (the mechanism list) was read
    // again on the new one.
    let spied = spy::calls(&std::fs::read_to_string(token.dir().join("spy.log")).unwrap());
    let last_init = spied
        .iter()
        .rposition(|c| c.name == "C_Initialize")
        .unwrap();
    assert!(
        spied.iter().filter(|c| c.name == "C_Initialize").count() >= 2,
        "{}",
        spy::tally(&spied)
    );
    assert!(
        spied[last_init..]
            .iter()
            .any(|c| c.name == "C_GetMechanismList"),
        "the reconnected token's mechanisms were read anew: {}",
        spy::tally(&spied[last_init..])
    );
    // Only the keys whose CSRs were delivered are on the token.
    assert_eq!(token.keys().len(), 2 * (delivered.len() + load_ok), "{log}");
}
