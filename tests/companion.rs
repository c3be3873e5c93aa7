//! SetCdnDomainCSRCertificate / SetDcdnDomainCSRCertificate on `hsm-csr
//! serve`, through both generations of the official SDKs
//! (tests/tools/companion.py): a CSR made through the service, signed by a
//! throw-away CA (openssl, in the test's directory), attached beside its
//! key, and every way a call can fail.
//!
//! This file holds the server, SDK and CA helpers; [`round_trips`] attaches
//! through every SDK, [`errors`] checks each error code and a timed-out
//! attach, [`hostile`] hostile certificates and the log.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::server::Server;
use crate::common::{Token, piped, python, repo};

mod errors;
mod hostile;
mod round_trips;

/// Access keys added to the service tests' three (tests/common/server.rs):
/// one granted both companions, one only the Cdn one, both an operator's
/// automation (`hsm-csr:AllKeys`): the keys they attach to are MainKey's.
/// The service tests' MainKey is granted only the two CSR calls.
const KEYS: &str = "[[service.access_keys]]\nid = \"Attacher\"\nsecret_file = \"attacher-secret\"\n\
     actions = [\"cdn:SetCdnDomainCSRCertificate\", \"dcdn:SetDcdnDomainCSRCertificate\", \"hsm-csr:AllKeys\"]\n\
     [[service.access_keys]]\nid = \"CdnAttacher\"\nsecret_file = \"attacher-secret\"\n\
     actions = [\"cdn:SetCdnDomainCSRCertificate\", \"hsm-csr:AllKeys\"]\n";

fn start(token: &Token, extra: &str) -> Server {
    std::fs::write(token.dir().join("attacher-secret"), "a-s3cret\n").unwrap();
    Server::start_with(token, token.ec_or_rsa(), extra, KEYS)
}

/// A token of this test's own (its own label prefix on a shared token).
fn private_token() -> Option<Token> {
    Some(Token::new())
}

/// A private token, [`start`]ed with `extra`, and a CA in its directory.
fn setup(extra: &str) -> Option<(Token, Server, Ca)> {
    let token = private_token()?;
    let server = start(&token, extra);
    let ca = Ca::new(&token);
    Some((token, server, ca))
}

/// A CSR for www.example.com made through `server` (new SDK, Cdn), and
/// `ca`'s certificate for it.
fn www_example_com(server: &Server, ca: &Ca) -> (String, String) {
    let made = sdk(server, &[create("new", "cdn", "www.example.com")]);
    let csr = made[0]["body"]["Csr"].as_str().unwrap().to_owned();
    let cert = ca.sign(&csr);
    (csr, cert)
}

/// The calls, made by one run of companion.py; one answer each.
fn sdk(server: &Server, calls: &[Value]) -> Vec<Value> {
    let out = piped(
        Command::new(python())
            .arg(repo().join("tests/tools/companion.py"))
            .arg(&server.addr),
        &serde_json::to_vec(calls).unwrap(),
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
pub(crate) struct Ca {
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
    pub(crate) fn new(token: &Token) -> Ca {
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
