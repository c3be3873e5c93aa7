//! One token, several tenants, on a real `hsm-csr serve`: certificates
//! join only their caller's keys, only certificates worth storing are
//! stored (each made with Python's `cryptography`, tests/tools/
//! tenant_certs.py), quotas hold and `keys prune` makes room, a full token
//! answers 503 with nothing of the token in it, and finding a key costs as
//! many token calls with 1,000 keys as with 3 (counted by OpenSC's
//! pkcs11-spy). Objects are counted with pkcs11-tool and `keys list`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::rpc::{self, Answer};
use crate::common::server::{Launch, Server};
use crate::common::spy::{self, SPY};
use crate::common::{Token, piped, python, repo};

/// Two tenants granted every action, A allowed 3 key pairs; their ids are
/// this test's own, so that a token shared by every test (the extra token
/// passes) does not count another test's keys as theirs.
struct Tenants {
    a: String,
    b: String,
    config: String,
}

fn tenants(token: &Token) -> Tenants {
    let suffix = token.prefix.trim_end_matches(':');
    let (a, b) = (format!("TenantA-{suffix}"), format!("TenantB-{suffix}"));
    let config = format!(
        "[[service.access_keys]]\nid = \"{a}\"\nsecret_env = \"MAIN_SECRET\"\nactions = [\"*\"]\nmax_keys = 3\n\
         [[service.access_keys]]\nid = \"{b}\"\nsecret_env = \"MAIN_SECRET\"\nactions = [\"*\"]\n"
    );
    Tenants { a, b, config }
}
const SECRET: &str = "s3cret";

fn csr(server: &Server, who: &str, cn: &str) -> Answer {
    rpc::get(
        &server.addr,
        &rpc::signed_query(who, SECRET, &[("CommonName", cn)]),
    )
}

fn attach(server: &Server, who: &str, domain: &str, pem: &str) -> Answer {
    let q = rpc::signed_query(
        who,
        SECRET,
        &[
            ("Action", "SetCdnDomainCSRCertificate"),
            ("DomainName", domain),
            ("ServerCertificate", pem),
        ],
    );
    rpc::get(&server.addr, &q)
}

fn json(a: &Answer) -> Value {
    serde_json::from_str(&a.body).unwrap_or(Value::Null)
}

/// Certificates for the CSR's key from tenant_certs.py.
fn certs(csr_pem: &str, mode: &str, n: usize) -> Vec<String> {
    let out = piped(
        Command::new(python())
            .arg(repo().join("tests/tools/tenant_certs.py"))
            .args([mode, &n.to_string()]),
        csr_pem.as_bytes(),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// This test's certificate objects, as pkcs11-tool lists them.
fn certificate_objects(token: &Token) -> usize {
    token
        .pkcs11_tool(&["--list-objects", "--type", "cert"])
        .split("Certificate Object")
        .filter(|c| {
            c.lines().any(|l| {
                l.trim()
                    .strip_prefix("label:")
                    .is_some_and(|v| v.trim().starts_with(&token.prefix))
            })
        })
        .count()
}

/// This test's key pairs owned by `owner`, as `keys list` shows them.
fn owned(token: &Token, owner: &str) -> Vec<Value> {
    let run = token
        .run(&["keys", "list"], &["--format", "json", "--owner", owner])
        .ok();
    let all: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    all.into_iter()
        .filter(|k| k["Label"].as_str().unwrap_or("").starts_with(&token.prefix))
        .collect()
}

#[test]
fn another_tenants_key_is_out_of_reach_and_only_certificates_worth_storing_are_stored() {
    let token = Token::new();
    let t = tenants(&token);
    let server = Server::start_with(&token, "rsa-2048", "", &t.config);
    let made = csr(&server, &t.a, "a.example.com");
    assert_eq!(made.status, 200, "{}", made.body);
    let csr_pem = json(&made)["Csr"].as_str().unwrap().to_owned();

    // B's certificate around A's public key, signed by B's own key.
    let foreign = &certs(&csr_pem, "foreign", 1)[0];
    let refused = attach(&server, &t.b, "a.example.com", foreign);
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (400, "Certificate.NoPrivateKey")
    );
    // Word for word the answer for a key that does not exist.
    let other = Token::new();
    let nobody = Server::start_with(&other, "rsa-2048", "", &t.config);
    let missing = attach(&nobody, &t.b, "a.example.com", foreign);
    assert_eq!(json(&missing)["Message"], json(&refused)["Message"]);
    assert_eq!(certificate_objects(&token), 0, "nothing stored for B");

    // A's own certificates that are not worth storing, each by its code.
    for (mode, code) in [
        ("expired", "Certificate.Expired"),
        ("ca", "Certificate.IsCA"),
        ("badsig", "Certificate.ChainInvalid"),
    ] {
        let pem = &certs(&csr_pem, mode, 1)[0];
        let a = attach(&server, &t.a, "a.example.com", pem);
        assert_eq!(
            (a.status, a.code.as_str()),
            (400, code),
            "{mode}: {}",
            a.body
        );
    }
    assert_eq!(certificate_objects(&token), 0);

    // Ten valid, distinct ones, oldest first: the key keeps four.
    for (i, pem) in certs(&csr_pem, "valid", 10).iter().enumerate() {
        let a = attach(&server, &t.a, "a.example.com", pem);
        assert_eq!(a.status, 200, "certificate {i}: {}", a.body);
        assert!(certificate_objects(&token) <= 4);
    }
    assert_eq!(certificate_objects(&token), 4);
    server.stop();
}

#[test]
fn the_quota_refuses_before_keygen_and_keys_prune_makes_room() {
    let token = Token::new();
    let t = tenants(&token);
    let top = format!("{}[audit]\npath = \"audit.jsonl\"\n", t.config);
    let server = Server::start_with(&token, "rsa-2048", "", &top);
    let mut pems = Vec::new();
    for i in 0..3 {
        let a = csr(&server, &t.a, &format!("q{i}.example.com"));
        assert_eq!(a.status, 200, "{}", a.body);
        pems.push(json(&a)["Csr"].as_str().unwrap().to_owned());
    }
    let refused = csr(&server, &t.a, "q3.example.com");
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (400, "QuotaExceeded.Key")
    );
    assert!(
        json(&refused)["Message"]
            .as_str()
            .unwrap()
            .contains("3 key pairs"),
        "{}",
        refused.body
    );
    assert_eq!(
        owned(&token, &t.a).len(),
        3,
        "no key made for the refused call"
    );
    // B has no quota.
    assert_eq!(csr(&server, &t.b, "b.example.com").status, 200);

    // Two of A's keys get certificates; prune retires the third.
    for (i, pem) in pems.iter().take(2).enumerate() {
        let cert = &certs(pem, "valid", 1)[0];
        let a = attach(&server, &t.a, &format!("q{i}.example.com"), cert);
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let dry = token
        .run(
            &["keys", "prune"],
            &["--never-certified-after", "0", "--owner", &t.a],
        )
        .ok();
    assert!(
        dry.stdout.contains("1 key pair(s) would be retired"),
        "{}",
        dry.stdout
    );
    assert_eq!(owned(&token, &t.a).len(), 3, "a dry run removes nothing");
    let audit = token.dir().join("audit.jsonl");
    let config = token.dir().join("prune.toml");
    std::fs::write(
        &config,
        format!("[audit]\npath = \"{}\"\n", audit.display()),
    )
    .unwrap();
    let done = token
        .run(
            &["keys", "prune"],
            &[
                "--never-certified-after",
                "0",
                "--owner",
                &t.a,
                "--yes",
                "--config",
                config.to_str().unwrap(),
            ],
        )
        .ok();
    assert!(done.stdout.contains("retired 1 of 1"), "{}", done.stdout);
    let left = owned(&token, &t.a);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|k| k["Certificate"] == true), "{left:?}");
    let events = std::fs::read_to_string(&audit).unwrap();
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"deleted\"") && l.contains("RetiredNeverCertified")),
        "{events}"
    );
    // Room for one more, and then the quota again. SoftHSM2 shows serve
    // what another process removed at once; tpm2-pkcs11 keeps the objects
    // a process loaded, so on a shared token serve is started again to
    // see the prune (docs/tenancy.md).
    let (server, refused_before) = if token.is_private_softhsm() {
        (server, 1)
    } else {
        server.stop();
        (Server::start_with(&token, "rsa-2048", "", &top), 0)
    };
    assert_eq!(csr(&server, &t.a, "q4.example.com").status, 200);
    assert_eq!(
        csr(&server, &t.a, "q5.example.com").code,
        "QuotaExceeded.Key"
    );
    let metrics = server.get("/metrics").unwrap();
    // Objects on the token show without max_objects too.
    assert!(metrics.contains("\nhsm_csr_token_objects{"), "{metrics}");
    assert!(!metrics.contains("hsm_csr_token_max_objects{"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "hsm_csr_quota_refusals_total{{owner=\"{}\"}} {}",
            t.a,
            refused_before + 1
        )),
        "{metrics}"
    );
    server.stop();
}

#[test]
fn a_full_token_answers_503_and_says_nothing_of_the_token() {
    let Some(token) = Token::private_softhsm("counts every object on the token") else {
        return;
    };
    let t = tenants(&token);
    // Eight objects on the token, nine allowed: no room for another pair.
    for i in 0..4 {
        token
            .create(&[
                "--common-name",
                &format!("existing{i}.example"),
                "--key-type",
                "ec-p256",
            ])
            .ok();
    }
    let top = format!("{}[audit]\npath = \"audit.jsonl\"\n", t.config);
    let server = Server::launch_on(
        &token,
        &Server::config(&token, "ec-p256", "")
            .token_lines("max_objects = 9")
            .extra(&top),
        &Launch::default(),
    );
    let answers: Vec<Answer> = (0..3)
        .map(|i| csr(&server, &t.b, &format!("f{i}.example.com")))
        .collect();
    for a in &answers {
        assert_eq!(a.status, 503, "{}", a.body);
        assert_eq!(a.code, "ServiceUnavailable");
        assert!(
            !a.body.contains("CKR_") && !a.body.contains("test-token"),
            "{}",
            a.body
        );
    }
    let metrics = server.get("/metrics").unwrap();
    assert!(
        metrics.contains("hsm_csr_token_objects{token=\"0\",label=\"test-token\"} 8\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hsm_csr_token_max_objects{token=\"0\",label=\"test-token\"} 9\n"),
        "{metrics}"
    );
    let log = server.stop();
    assert!(log.contains("is full"), "{log}");
    let audit = std::fs::read_to_string(token.dir().join("audit.jsonl")).unwrap_or_default();
    assert!(!audit.contains("CKR_"), "{audit}");
    let objects = token
        .pkcs11_tool(&["--list-objects"])
        .matches("Object;")
        .count();
    assert_eq!(objects, 8, "nothing was made");
}

/// The token calls one SetCdnDomainCSRCertificate makes, through
/// pkcs11-spy, with `keys` extra key pairs on the token.
fn calls_of_one_set(keys: usize) -> Option<Vec<String>> {
    let token = Token::private_softhsm("counts token calls through pkcs11-spy")?;
    let t = tenants(&token);
    // Key pairs nobody asks about, made straight on the token.
    if keys > 0 {
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/tools/p11fill.py"))
            .args([&token.module, &token.label, &keys.to_string()])
            .env("HSM_CSR_PIN", crate::common::PIN)
            .env("SOFTHSM2_CONF", token.conf());
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let spy_log = token.dir().join("spy.log");
    let softhsm = token.module.clone();
    let env = [
        ("PKCS11SPY", softhsm.as_str()),
        ("PKCS11SPY_OUTPUT", spy_log.to_str().unwrap()),
    ];
    let server = Server::launch_on(
        &token,
        &Server::config(&token, "ec-p256", "workers = 1")
            .module(SPY)
            .extra(&t.config),
        &Launch {
            env: &env,
            ..Launch::default()
        },
    );
    let made = csr(&server, &t.a, "spy.example.com");
    assert_eq!(made.status, 200, "{}", made.body);
    let cert = certs(json(&made)["Csr"].as_str().unwrap(), "valid", 1).remove(0);
    // The start's pass over every key is over once the log stops growing.
    let quiet = || {
        let mut last = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = std::fs::metadata(&spy_log).map(|m| m.len()).unwrap_or(0);
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    };
    let before = quiet();
    let a = attach(&server, &t.a, "spy.example.com", &cert);
    assert_eq!(a.status, 200, "{}", a.body);
    server.stop();
    let log = std::fs::read(&spy_log).unwrap();
    let window = String::from_utf8_lossy(&log[usize::try_from(before).unwrap()..]).into_owned();
    Some(one_sessions_calls(&window))
}

/// The calls in a pkcs11-spy log excerpt made on the session that stored
/// the certificate (the worker's; the sweeper has its own), up to the
/// C_CreateObject and the calls of the same request after it.
fn one_sessions_calls(window: &str) -> Vec<String> {
    let calls = spy::calls(window);
    let worker = calls
        .iter()
        .find(|c| c.name == "C_CreateObject")
        .and_then(|c| c.session.clone())
        .expect("the certificate was stored");
    calls
        .into_iter()
        .filter(|c| c.session.as_deref() == Some(worker.as_str()))
        .map(|c| c.name)
        .collect()
}

#[test]
fn finding_a_certificates_key_costs_the_same_with_3_and_1000_keys() {
    let Some(few) = calls_of_one_set(3) else {
        return;
    };
    let many = calls_of_one_set(1000).unwrap();
    assert_eq!(few, many, "token calls of one Set call, 3 keys vs 1000");
    eprintln!(
        "one SetCdnDomainCSRCertificate: {} token calls: {few:?}",
        few.len()
    );
}

#[test]
fn keys_made_on_the_command_line_belong_to_the_operator_or_to_owner() {
    let token = Token::new();
    let t = tenants(&token);
    let made_for = |owner: Option<&str>, cn: &str| -> String {
        let mut args = vec!["--common-name", cn, "--key-type", "rsa"];
        if let Some(o) = owner {
            args.extend(["--owner", o]);
        }
        token.create(&args).ok().json()["Csr"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let local = made_for(None, "local.example.com");
    let for_a = made_for(Some(&t.a), "for-a.example.com");
    let server = Server::start_with(&token, "rsa-2048", "", &t.config);
    // The operator's key is nobody's tenant's; the one made for A is A's.
    let cert = &certs(&local, "valid", 1)[0];
    assert_eq!(
        attach(&server, &t.a, "local.example.com", cert).code,
        "Certificate.NoPrivateKey"
    );
    let cert = &certs(&for_a, "valid", 1)[0];
    assert_eq!(
        attach(&server, &t.b, "for-a.example.com", cert).code,
        "Certificate.NoPrivateKey"
    );
    assert_eq!(attach(&server, &t.a, "for-a.example.com", cert).status, 200);
    server.stop();
    // keys list: the owners, and a line of counts per owner.
    let run = token.run(&["keys", "list"], &["--owner", &t.a]).ok();
    assert!(run.stdout.contains("OWNER"), "{}", run.stdout);
    let summary = run.stdout.lines().last().unwrap();
    assert!(
        summary.ends_with(&format!("by owner: {} 1 (1 cert)", t.a)),
        "{summary}"
    );
    assert_eq!(owned(&token, "local").len(), 1);
    // An owner that could forge a line or a label is refused.
    let run = token.create(&["--common-name", "x.example.com", "--owner", "a\nb"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("owner"), "{}", run.stderr);
}

#[test]
fn health_and_metrics_can_leave_the_api_port_and_name_no_token_label() {
    let token = Token::new();
    let t = tenants(&token);
    let server = Server::launch_on(
        &token,
        // RSA: every token the suite runs on makes it (openCryptoki has
        // no EC).
        &Server::config(&token, "rsa-2048", "admin_listen = \"127.0.0.1:0\"")
            .token_lines("name = \"hsm-a\"")
            .extra(&t.config),
        &Launch::default(),
    );
    let admin = server.admin_addr();
    // The API port answers the API only.
    for path in ["/healthz", "/metrics"] {
        let got = server.get(path).unwrap();
        assert!(got.starts_with("HTTP/1.1 404"), "{path}: {got}");
    }
    assert_eq!(csr(&server, &t.a, "api.example.com").status, 200);
    let get = |path: &str| crate::common::server::get_at(&admin, path).unwrap();
    let health = get("/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"Label\":\"hsm-a\""), "{health}");
    let metrics = get("/metrics");
    assert!(metrics.contains("label=\"hsm-a\""), "{metrics}");
    for text in [&health, &metrics] {
        assert!(
            !text.contains(&token.label),
            "the token's label is shown: {text}"
        );
    }
    server.stop();
}
