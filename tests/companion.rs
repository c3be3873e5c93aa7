//! SetCdnDomainCSRCertificate / SetDcdnDomainCSRCertificate on `hsm-csr
//! serve`, through both generations of the official SDKs
//! (tests/tools/companion.py): a CSR made through the service, signed by a
//! throw-away CA (openssl, in the test's directory), attached beside its
//! key, and every way a call can fail.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::rpc;
use crate::common::server::Server;
use crate::common::{Token, python, repo};

/// Access keys added to the service tests' three (tests/common/server.rs):
/// one granted both companions, one only the Cdn one. The service tests'
/// MainKey is granted only the two CSR calls.
const KEYS: &str = "[[service.access_keys]]\nid = \"Attacher\"\nsecret_file = \"attacher-secret\"\n\
     actions = [\"cdn:SetCdnDomainCSRCertificate\", \"dcdn:SetDcdnDomainCSRCertificate\"]\n\
     [[service.access_keys]]\nid = \"CdnAttacher\"\nsecret_file = \"attacher-secret\"\n\
     actions = [\"cdn:SetCdnDomainCSRCertificate\"]\n";

fn start(token: &Token, extra: &str) -> Server {
    std::fs::write(token.dir().join("attacher-secret"), "a-s3cret\n").unwrap();
    Server::start_with(token, "ec-p256", extra, KEYS)
}

/// The calls, made by one run of companion.py; one answer each.
fn sdk(server: &Server, calls: &[Value]) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(repo().join("tests/tools/companion.py"))
        .arg(&server.addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), calls).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn create(sdk: &str, product: &str, name: &str) -> Value {
    json!({"op": "create", "sdk": sdk, "product": product, "ak": "MainKey",
           "secret": "s3cret", "common_name": name, "sans": name})
}

fn set(sdk: &str, product: &str, domain: Option<&str>, cert: Option<&str>) -> Value {
    json!({"op": "set", "sdk": sdk, "product": product, "ak": "Attacher",
           "secret": "a-s3cret", "domain": domain, "cert": cert})
}

fn as_key(mut call: Value, ak: &str, secret: &str) -> Value {
    call["ak"] = ak.into();
    call["secret"] = secret.into();
    call
}

/// A throw-away CA in the test's directory.
struct Ca {
    dir: PathBuf,
}

fn openssl(args: &[&str], dir: &std::path::Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Ca {
    fn new(token: &Token) -> Ca {
        let dir = token.dir().to_owned();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=hsm-csr test CA",
                "-days",
                "2",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
            &dir,
        );
        Ca { dir }
    }

    /// The certificate for `csr`, with its extensions (the SANs).
    fn sign(&self, csr: &str) -> String {
        std::fs::write(self.dir.join("req.pem"), csr).unwrap();
        let cert = openssl(
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-copy_extensions",
                "copy",
                "-in",
                "req.pem",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
            ],
            &self.dir,
        );
        String::from_utf8(cert).unwrap()
    }

    /// A certificate for `subject` (`/CN=...`) over a key made here, not
    /// on the token.
    fn sign_foreign(&self, subject: &str) -> String {
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "foreign.key",
                "-subj",
                subject,
                "-out",
                "foreign.csr",
            ],
            &self.dir,
        );
        let csr = std::fs::read_to_string(self.dir.join("foreign.csr")).unwrap();
        self.sign(&csr)
    }
}

/// The certificate objects with CKA_ID `id` (hex), as OpenSC lists them
/// (`--list-objects` does not filter by `--id`).
fn certificates_under(token: &Token, id: &str) -> Vec<String> {
    let all = token.pkcs11_tool(&["--list-objects", "--type", "cert"]);
    all.split("Certificate Object")
        .filter(|o| o.lines().any(|l| l.trim() == format!("ID:         {id}")))
        .map(str::to_owned)
        .collect()
}

/// The token's keys as `hsm-csr keys list` shows them.
fn listed(token: &Token) -> Vec<Value> {
    let run = token.run(&["keys", "list"], &["--format", "json"]).ok();
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn both_companions_attach_through_both_sdk_generations() {
    let Some(token) =
        Token::private_softhsm("the companion suite runs a server on a private token")
    else {
        return;
    };
    let server = start(&token, "");
    let ca = Ca::new(&token);
    let cases = [
        ("new", "cdn", "new-cdn.example.com"),
        ("new-rpc", "dcdn", "rpc-dcdn.example.com"),
        ("old", "cdn", "old-cdn.example.com"),
        ("old", "dcdn", "old-dcdn.example.com"),
    ];
    let creates: Vec<Value> = cases.iter().map(|(s, p, n)| create(s, p, n)).collect();
    let made = sdk(&server, &creates);
    let mut sets = Vec::new();
    let mut certs = Vec::new();
    for ((sdk_name, product, name), m) in cases.iter().zip(&made) {
        assert_eq!(m["ok"], true, "{m}");
        let cert = ca.sign(m["body"]["Csr"].as_str().unwrap());
        sets.push(set(sdk_name, product, Some(name), Some(&cert)));
        certs.push(cert);
    }
    // Twice each: the second finds the certificate there and stores nothing.
    let again = sets.clone();
    sets.extend(again);
    let answers = sdk(&server, &sets);
    for (call, a) in sets.iter().zip(&answers) {
        assert_eq!(a["ok"], true, "{call}: {a}");
        let body = a["body"].as_object().unwrap();
        assert!(
            body.len() == 1 && body["RequestId"].as_str().is_some_and(|r| !r.is_empty()),
            "only RequestId: {a}"
        );
    }
    let log = server.stop();
    assert_eq!(log.matches("certificate attached").count(), 8, "{log}");
    assert_eq!(log.matches("stored=true").count(), 4, "{log}");

    // Each certificate is on the token once, with its key's CKA_ID and label.
    let keys = listed(&token);
    for (m, (_, _, name)) in made.iter().zip(cases) {
        let pub_md5 = m["body"]["PubMd5"].as_str().unwrap();
        let key = keys
            .iter()
            .find(|k| k["PubMd5"] == pub_md5)
            .unwrap_or_else(|| panic!("no key {pub_md5}: {keys:?}"));
        assert_eq!(key["Certificate"], true, "{key}");
        let id = key["Id"].as_str().unwrap();
        let objects = certificates_under(&token, id);
        assert_eq!(objects.len(), 1, "{objects:?}");
        let label = key["Label"].as_str().unwrap();
        assert!(
            objects[0].contains(&format!("label:      {label}\n")),
            "{label}: {objects:?}"
        );
        assert!(objects[0].contains(&format!("CN={name}")), "{objects:?}");
    }
    let all = token.pkcs11_tool(&["--list-objects", "--type", "cert"]);
    assert_eq!(all.matches("Certificate Object").count(), 4, "{all}");
}

#[test]
fn each_error_through_both_sdk_generations_and_no_certificate_is_stored() {
    let Some(token) =
        Token::private_softhsm("the companion suite runs a server on a private token")
    else {
        return;
    };
    let server = start(&token, "");
    let ca = Ca::new(&token);
    let made = sdk(&server, &[create("new", "cdn", "www.example.com")]);
    let csr = made[0]["body"]["Csr"].as_str().unwrap().to_owned();
    let cert = ca.sign(&csr);
    let foreign = ca.sign_foreign("/CN=www.example.com");
    let domain = Some("www.example.com");
    let cases: Vec<(Value, &str, u64)> = ["new", "new-rpc", "old"]
        .iter()
        .flat_map(|s| {
            let product = if *s == "new-rpc" { "dcdn" } else { "cdn" };
            [
                (
                    set(s, product, domain, None),
                    "Certificate.MissingParameter",
                    400,
                ),
                (
                    set(s, product, domain, Some("")),
                    "Certificate.MissingParameter",
                    400,
                ),
                (
                    set(s, product, domain, Some("not a certificate at all!")),
                    "Certificate.DecodeError",
                    400,
                ),
                (
                    set(s, product, domain, Some(&csr)),
                    "Certificate.FormatError",
                    400,
                ),
                (
                    set(s, product, Some("other.example.com"), Some(&cert)),
                    "Certificate.MissMatch",
                    400,
                ),
                (
                    set(s, product, domain, Some(&foreign)),
                    "Certificate.NoPrivateKey",
                    400,
                ),
                (set(s, product, None, Some(&cert)), "MissingParameter", 400),
                // The CSR calls' key is not granted the companions.
                (
                    as_key(set(s, product, domain, Some(&cert)), "MainKey", "s3cret"),
                    "Forbidden.RAM",
                    403,
                ),
            ]
        })
        .collect();
    let calls: Vec<Value> = cases.iter().map(|(c, _, _)| c.clone()).collect();
    let answers = sdk(&server, &calls);
    for ((call, code, status), a) in cases.iter().zip(&answers) {
        assert_eq!(
            (a["code"].as_str(), a["status"].as_u64()),
            (Some(*code), Some(*status)),
            "{call}: {a}"
        );
    }
    let messages: Vec<&str> = answers
        .iter()
        .filter_map(|a| a["message"].as_str())
        .collect();
    for wording in [
        "You must specify the Certificate parameter.",
        "An error occurred while decoding the certificate.",
        "The format of the certificate is invalid.",
        "The certificate does not match the domain.",
        "The private key of the certificate does not exist.",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(wording)),
            "{wording}: {messages:?}"
        );
    }
    // A key granted only the Cdn companion: Cdn yes, Dcdn no.
    let cdn_only = |product| {
        as_key(
            set("new", product, domain, Some(&cert)),
            "CdnAttacher",
            "a-s3cret",
        )
    };
    let answers = sdk(&server, &[cdn_only("dcdn"), cdn_only("cdn")]);
    assert_eq!(answers[0]["code"], "Forbidden.RAM", "{}", answers[0]);
    assert_eq!(answers[1]["ok"], true, "{}", answers[1]);
    server.stop();
    let all = token.pkcs11_tool(&["--list-objects", "--type", "cert"]);
    assert_eq!(all.matches("Certificate Object").count(), 1, "{all}");
}

/// A SetCdnDomainCSRCertificate POST by Attacher, every parameter in the
/// form body, signed as the RPC SDKs sign a POST.
fn post_form(server: &Server, params: &[(&str, &str)]) -> rpc::Answer {
    use hsm_csr::service::request_signing::{
        percent_encode, rpc_signature, rpc_string_to_sign, timestamp_now,
    };
    let nonce = uuid::Uuid::new_v4().to_string();
    let now = timestamp_now();
    let mut all: Vec<(String, String)> = [
        ("Action", "SetCdnDomainCSRCertificate"),
        ("Version", "2018-05-10"),
        ("Format", "JSON"),
        ("AccessKeyId", "Attacher"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", now.as_str()),
    ]
    .iter()
    .chain(params)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let signature = rpc_signature("a-s3cret", &rpc_string_to_sign("POST", &all));
    all.push(("Signature".into(), signature));
    let body = all
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    rpc::exchange(&server.addr, request.as_bytes())
}

#[test]
fn hostile_certificates_are_refused_and_logs_stay_one_line_each() {
    let Some(token) =
        Token::private_softhsm("the companion suite runs a server on a private token")
    else {
        return;
    };
    // Request limits large enough that the service's own bound is reached.
    let server = start(&token, "max_body_bytes = 1048576");
    let ca = Ca::new(&token);
    let made = sdk(&server, &[create("new", "cdn", "www.example.com")]);
    let cert = ca.sign(made[0]["body"]["Csr"].as_str().unwrap());
    let call = |params: &[(&str, &str)]| {
        let mut all = vec![
            ("Action", "SetCdnDomainCSRCertificate"),
            ("Version", "2018-05-10"),
        ];
        all.extend_from_slice(params);
        rpc::get(
            &server.addr,
            &rpc::signed_query("Attacher", "a-s3cret", &all),
        )
    };

    // Over the size bound (in a form body: hyper answers 414 to a URI over
    // 64 KiB), and a chain longer than allowed.
    let huge = format!("{cert}{}", "#".repeat(70 * 1024));
    let a = post_form(
        &server,
        &[
            ("DomainName", "www.example.com"),
            ("ServerCertificate", &huge),
        ],
    );
    assert_eq!(
        (a.status, a.code.as_str()),
        (400, "Certificate.FormatError"),
        "{}",
        a.body
    );
    assert!(a.body.contains("over the limit of 65536"), "{}", a.body);
    let chain = cert.repeat(9);
    let a = call(&[
        ("DomainName", "www.example.com"),
        ("ServerCertificate", &chain),
    ]);
    assert_eq!(a.code, "Certificate.FormatError", "{}", a.body);
    // Twice: which one would count is a guess, so neither does.
    let a = call(&[
        ("DomainName", "www.example.com"),
        ("ServerCertificate", &cert),
        ("ServerCertificate", "x"),
    ]);
    assert_eq!(
        (a.status, a.code.as_str()),
        (400, "InvalidParameter"),
        "{}",
        a.body
    );
    // A private key sent along is refused, and not echoed.
    let key = std::fs::read_to_string(token.dir().join("ca.key")).unwrap();
    let with_key = format!("{cert}{key}");
    let a = call(&[
        ("DomainName", "www.example.com"),
        ("ServerCertificate", &with_key),
    ]);
    assert_eq!(a.code, "Certificate.FormatError", "{}", a.body);
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!a.body.contains(&key_body[..20]), "{}", a.body);

    // Control characters in the certificate's name and in DomainName.
    let evil = ca.sign_foreign("/CN=evil\nforged=1 code=OK\r\u{1b}[2J");
    let a = call(&[
        ("DomainName", "www.example.com"),
        ("ServerCertificate", &evil),
    ]);
    assert_eq!(a.code, "Certificate.MissMatch", "{}", a.body);
    let message: Value = serde_json::from_str(&a.body).unwrap();
    let message = message["Message"].as_str().unwrap();
    assert!(!message.chars().any(char::is_control), "{message:?}");
    let a = call(&[
        ("DomainName", "www.example.com\nforged=1"),
        ("ServerCertificate", &cert),
    ]);
    assert_eq!(a.code, "InvalidValue.Malformed", "{}", a.body);
    // Still attaches after all that.
    let a = call(&[
        ("DomainName", "www.example.com"),
        ("ServerCertificate", &cert),
    ]);
    assert_eq!(a.status, 200, "{}", a.body);

    let log = server.stop();
    for line in log.lines() {
        assert!(
            !line.starts_with("forged") && !line.contains('\u{1b}'),
            "a caller wrote a log line: {line:?}"
        );
    }
    assert!(
        !log.contains(&key_body[..20]),
        "a private key reached the log"
    );
    let all = token.pkcs11_tool(&["--list-objects", "--type", "cert"]);
    assert_eq!(all.matches("Certificate Object").count(), 1, "{all}");
}

#[test]
fn an_attach_that_times_out_keeps_no_certificate() {
    let Some(token) =
        Token::private_softhsm("the companion suite runs a server on a private token")
    else {
        return;
    };
    let v = token
        .create(&["--common-name", "slow.example.com"])
        .ok()
        .json();
    let ca = Ca::new(&token);
    let cert = ca.sign(v["Csr"].as_str().unwrap());
    let server = start(&token, "request_timeout_ms = 1");
    let a = sdk(
        &server,
        &[set("new", "cdn", Some("slow.example.com"), Some(&cert))],
    );
    assert_eq!(
        (a[0]["code"].as_str(), a[0]["status"].as_u64()),
        (Some("ServiceUnavailable"), Some(503)),
        "{}",
        a[0]
    );
    // The worker stores the certificate after the answer went out, finds
    // nobody to take it, and removes it again.
    server.wait_for_log("the certificate it stored was removed");
    let log = server.stop();
    let all = token.pkcs11_tool(&["--list-objects", "--type", "cert"]);
    assert_eq!(all.matches("Certificate Object").count(), 0, "{all}\n{log}");
}
