//! `/explorer`: off by default (404); when on, its answers carry a strict
//! Content-Security-Policy and the service opens no CORS; and in Debian's
//! headless Chromium, driven by Selenium, the page signs a call with the
//! typed secret and gets a CSR that `openssl req -verify` accepts for a key
//! that is on the token, shows `SignatureDoesNotMatch` for a wrong secret,
//! writes Python for both SDK generations that runs as written and gets a
//! CSR, and no request the browser made nor any line the service logged
//! holds the secret.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::rpc;
use crate::common::server::{Launch, Server};
use crate::common::{Token, openssl_pub_md5, python, repo, skip, verified_text};
use crate::companion::Ca;

/// A secret long and odd enough that finding it anywhere is no accident.
const SECRET: &str = "explorer-Secret-7f3a9c1e5b2d4f60a8c7e9d1";

/// The explorer's page and the files beside it.
const PATHS: [&str; 4] = [
    "/explorer",
    "/explorer/explorer.js",
    "/explorer/explorer.css",
    "/explorer/favicon.svg",
];

/// The policy docs/explorer.md quotes, on every explorer answer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The service tests' server with `extra` in `[service]`, and an access key
/// `ExplorerKey` that may call every action, its secret in EXPLORER_SECRET.
fn start(token: &Token, extra: &str) -> Server {
    Server::launch_on(
        token,
        &Server::config(token, token.ec_or_rsa(), extra).access_key(
            "ExplorerKey",
            "EXPLORER_SECRET",
            "[\"*\"]",
        ),
        &Launch {
            env: &[("EXPLORER_SECRET", SECRET)],
            ..Launch::default()
        },
    )
}

/// `GET path` on a connection of its own: status, headers, body.
fn get(addr: &str, path: &str) -> rpc::Answer {
    rpc::exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn off_by_default_the_explorer_is_not_found() {
    let token = Token::new();
    let server = start(&token, "");
    for path in PATHS {
        let answer = server.get(path).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
    }
    assert!(!server.log_text().contains("/explorer"));
}

#[test]
fn the_explorer_is_locked_down_and_opens_no_cors() {
    let token = Token::new();
    let server = start(&token, "explorer = true");
    server.wait_for_log(&format!("API explorer on http://{}/explorer", server.addr));
    for (path, kind) in PATHS.into_iter().zip([
        "text/html",
        "text/javascript",
        "text/css",
        "image/svg+xml",
    ]) {
        let answer = get(&server.addr, path);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert!(answer.header("content-type").unwrap().starts_with(kind));
        for (name, value) in [
            ("content-security-policy", CSP),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
        ] {
            assert_eq!(answer.header(name), Some(value), "{path}: {name}");
        }
        assert!(
            answer
                .headers
                .iter()
                .all(|(n, _)| !n.starts_with("access-control-")),
            "{answer:?}"
        );
    }
    let page = server.get("/explorer").unwrap();
    // Nothing about the token: neither its label nor its serial nor a key.
    assert!(!page.contains(&token.label), "the page names the token");
    assert!(!page.contains("pkcs11:"), "the page names a key");
    // A preflight from another origin, and a call that names one, get no
    // CORS header: a page elsewhere cannot read the service's answers.
    let preflight = rpc::exchange(
        &server.addr,
        format!(
            "OPTIONS / HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization,x-acs-action\r\n\
             Connection: close\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let call = rpc::exchange(
        &server.addr,
        format!(
            "POST /?CommonName=a.example.com HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    for answer in [preflight, call] {
        assert!(!(200..300).contains(&answer.status), "{answer:?}");
        assert!(
            answer
                .headers
                .iter()
                .all(|(n, _)| !n.starts_with("access-control-")),
            "{answer:?}"
        );
    }
}

/// An organization that needs escaping in every snippet's language: a
/// quote, a backslash, and characters from outside ASCII and the BMP.
const ORGANIZATION: &str = "Explorer \"Quoted\" \\ Org \u{e9} \u{416} \u{1f600}";

/// The subject every CSR of the test has, as the page decodes it.
const SUBJECT: &str = "C=CN, ST=Zhejiang, L=Hangzhou, O=Explorer \"Quoted\" \\ Org \u{e9} \u{416} \u{1f600}, \
     OU=Aliyun CDN, CN=explorer.example.com";

/// The subject of `csr` as openssl reads it, UTF-8 unescaped.
fn subject(csr: &str) -> String {
    let out = crate::common::openssl(
        &[
            "req",
            "-noout",
            "-subject",
            "-nameopt",
            "sep_comma_plus_space,utf8,-esc_msb",
        ],
        csr.as_bytes(),
    );
    String::from_utf8(out)
        .unwrap()
        .trim()
        .trim_start_matches("subject=")
        .to_owned()
}

/// With `admin_listen`, the explorer is on `listen` only: the admin port
/// serves health and metrics, nothing a browser signs from.
#[test]
fn the_explorer_is_never_on_the_admin_port() {
    let token = Token::new();
    let server = start(&token, "explorer = true\nadmin_listen = \"127.0.0.1:0\"");
    let admin = server.admin_addr();
    assert_eq!(get(&admin, "/healthz").status, 200);
    for path in PATHS {
        assert_eq!(get(&admin, path).status, 404, "{path}");
        assert_eq!(get(&server.addr, path).status, 200, "{path}");
    }
}

/// Where the browser test leaves its screenshot and request log.
fn out_dir() -> PathBuf {
    let dir = repo().join("target/explorer-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the page in Chromium (signing the CSR with the CA in `ca_dir` for
/// the companion call); result.json as JSON.
fn drive(server: &Server, dir: &Path, ca_dir: &Path, params: &[(&str, &str)]) -> Value {
    let params: Vec<[&str; 2]> = params.iter().map(|(k, v)| [*k, *v]).collect();
    let out = Command::new(python())
        .arg(repo().join("tests/tools/explorer_browser.py"))
        .arg(format!("http://{}/explorer", server.addr))
        .arg(dir)
        .env("EXPLORER_KEY_ID", "ExplorerKey")
        .env("EXPLORER_SECRET", SECRET)
        .env("EXPLORER_PARAMS", serde_json::to_string(&params).unwrap())
        .env("EXPLORER_CA_DIR", ca_dir)
        .env("SE_AVOID_STATS", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "explorer_browser.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap()
}

/// Runs a generated snippet as written, with the access key in the
/// environment; its stdout.
fn run_snippet(dir: &Path, name: &str, code: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, code).unwrap();
    let out = Command::new(python())
        .arg(&file)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "ExplorerKey")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}:\n{code}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_person_gets_a_csr_and_the_sdk_code_for_it_in_a_real_browser() {
    let token = Token::new();
    if !token.is_private_softhsm() {
        skip(
            &token,
            "the page does not depend on the token; its browser test runs once, on SoftHSM2",
        );
        return;
    }
    if !Path::new("/usr/bin/chromium").exists() || !Path::new("/usr/bin/chromedriver").exists() {
        skip(
            &token,
            "needs Debian's chromium and chromium-driver (scripts/test.sh installs them)",
        );
        return;
    }
    let server = start(&token, "explorer = true");
    let dir = out_dir();
    Ca::new(&token);
    let result = drive(
        &server,
        &dir,
        token.dir(),
        &[
            ("CommonName", "explorer.example.com"),
            ("SANs", "a.example.com,b.example.com"),
            ("Organization", ORGANIZATION),
        ],
    );

    // The answer's JSON, as the page shows it: a CSR openssl accepts.
    let ok = &result["ok"];
    let answer: Value = serde_json::from_str(ok["response"].as_str().unwrap()).unwrap();
    let csr = answer["Csr"].as_str().unwrap();
    let text = verified_text(csr);
    assert_eq!(subject(csr), SUBJECT);
    assert!(
        text.contains("DNS:a.example.com, DNS:b.example.com"),
        "{text}"
    );
    let md5 = openssl_pub_md5(csr);
    assert_eq!(answer["PubMd5"], md5.as_str());
    assert_eq!(answer["CommonName"], "explorer.example.com");
    // ... decoded in the page.
    assert_eq!(ok["decoded_shown"], true);
    assert_eq!(ok["subject"], SUBJECT);
    assert_eq!(
        ok["sans"],
        "DNS:explorer.example.com, DNS:a.example.com, DNS:b.example.com"
    );
    let key_type = ok["key_type"].as_str().unwrap();
    assert!(
        key_type == "EC P-256" || key_type == "RSA 2048",
        "{key_type}"
    );
    assert_eq!(ok["pub_md5"], md5.as_str());
    // The request as sent: ACS3, the signature shown, the secret not.
    let request = ok["request"].as_str().unwrap();
    assert!(request.starts_with("POST http://"), "{request}");
    assert!(
        request.contains("authorization: ACS3-HMAC-SHA256 Credential=ExplorerKey,"),
        "{request}"
    );
    // The key is on the token, sensitive and never extractable.
    let listed = token.listed();
    assert!(
        listed.iter().any(|k| k["PubMd5"] == md5.as_str()),
        "the CSR's key is not on the token: {listed:?}"
    );
    let private: Vec<Value> = token
        .keys()
        .into_iter()
        .filter(|k| k["class"] == "private")
        .collect();
    assert_eq!(private.len(), 1, "{private:?}");
    assert_eq!(private[0]["sensitive"], true);
    assert_eq!(private[0]["extractable"], false);

    // A wrong secret: the cloud's code and message, as the SDKs raise them.
    let wrong = &result["wrong"];
    let refused: Value = serde_json::from_str(wrong["response"].as_str().unwrap()).unwrap();
    assert_eq!(refused["Code"], "SignatureDoesNotMatch");
    let error = wrong["error"].as_str().unwrap();
    assert!(
        error.contains("Error: SignatureDoesNotMatch code: 400, "),
        "{error}"
    );
    assert_eq!(wrong["decoded_shown"], false);

    // The companion call from the page stores the CA's certificate beside
    // the key.
    let stored: Value =
        serde_json::from_str(result["companion"]["response"].as_str().unwrap()).unwrap();
    assert!(stored["Code"].is_null(), "{stored}");
    assert!(stored["RequestId"].is_string(), "{stored}");
    assert_eq!(token.certificates().len(), 1);
    assert!(
        result["companion"]["sdk_python"]
            .as_str()
            .unwrap()
            .contains("client.set_cdn_domain_csrcertificate(request)")
    );

    // Text that is not valid Unicode gets a note, not code, and no call.
    assert_eq!(
        result["lone_surrogate_sdk"],
        "Organization holds text that is not valid Unicode; correct it to get code."
    );
    assert_eq!(
        result["lone_surrogate_status"],
        "Organization holds text that is not valid Unicode."
    );

    // The code follows the form as it is typed.
    let typed = result["typed_sdk"].as_str().unwrap();
    assert!(
        typed.contains("    common_name=\"explorer.example.com\",\n"),
        "{typed}"
    );

    // The generated Python, both generations, runs as written.
    let new = ok["sdk_python"].as_str().unwrap();
    assert!(new.contains("os.environ[\"ALIBABA_CLOUD_ACCESS_KEY_SECRET\"]"));
    let printed: Value = serde_json::from_str(&run_snippet(&dir, "sdk_python.py", new)).unwrap();
    verified_text(printed["Csr"].as_str().unwrap());
    assert_eq!(subject(printed["Csr"].as_str().unwrap()), SUBJECT);
    let legacy = ok["sdk_python_legacy"].as_str().unwrap();
    let printed: Value =
        serde_json::from_str(&run_snippet(&dir, "sdk_python_legacy.py", legacy)).unwrap();
    verified_text(printed["Csr"].as_str().unwrap());
    assert_eq!(subject(printed["Csr"].as_str().unwrap()), SUBJECT);
    let java = ok["sdk_java"].as_str().unwrap();
    assert!(
        java.contains(
            r#".setOrganization("Explorer \"Quoted\" \\ Org \u00e9 \u0416 \ud83d\ude00")"#
        ),
        "{java}"
    );
    assert!(java.contains("System.getenv(\"ALIBABA_CLOUD_ACCESS_KEY_SECRET\")"));

    // The secret is nowhere: not in a snippet, not in any request the
    // browser made (URL, headers, body), not in the page's URL, not in the
    // service's log.
    for snippet in [new, legacy, java] {
        assert!(!snippet.contains(SECRET));
    }
    let requests = std::fs::read_to_string(dir.join("requests.json")).unwrap();
    let sent: Vec<Value> = serde_json::from_str(&requests).unwrap();
    assert!(
        sent.iter().any(|r| r["url"]
            .as_str()
            .unwrap_or("")
            .contains("CommonName=explorer.example.com")),
        "the browser's request log did not record the call: {requests}"
    );
    assert!(!requests.contains(SECRET), "a request carried the secret");
    assert!(!ok["url"].as_str().unwrap().contains("Secret"));
    assert_eq!(result["secret_field_type"], "password");
    let log = server.stop();
    assert!(!log.contains(SECRET), "the service logged the secret");
    // The page broke no rule of its own policy and asked for nothing it
    // lacks; the one failed load is the wrong secret's 400.
    let console: Vec<&str> = result["browser_log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        console
            .iter()
            .all(|m| !m.contains("Content Security Policy")),
        "{console:?}"
    );
    let failed: Vec<&&str> = console
        .iter()
        .filter(|m| m.contains("Failed to load resource"))
        .collect();
    assert!(
        failed.len() == 1 && failed[0].contains("status of 400"),
        "{failed:?}"
    );
    assert!(dir.join("explorer.png").exists());
}
