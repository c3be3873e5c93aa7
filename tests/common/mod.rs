//! Shared helpers: a private SoftHSM2 token per test, the built binary, and
//! the outside tools that check its output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "1234";
pub const LABEL: &str = "test-token";

/// A freshly initialised SoftHSM2 token in a temporary directory, made by
/// the same script the quick start uses.
pub struct Token {
    dir: tempfile::TempDir,
}

impl Token {
    pub fn new() -> Token {
        let dir = tempfile::Builder::new()
            .prefix("hsm-csr-test-")
            .tempdir()
            .unwrap();
        let status = Command::new("bash")
            .arg(repo().join("scripts/make-softhsm-token.sh"))
            .arg(dir.path().join("store"))
            .arg(LABEL)
            .env("TOKEN_PIN", PIN)
            .status()
            .expect("bash");
        assert!(
            status.success(),
            "make-softhsm-token.sh failed: is softhsm2 installed? Run scripts/test.sh"
        );
        Token { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("store/softhsm2.conf")
    }

    /// `hsm-csr` with this token's SoftHSM config and PIN in the environment,
    /// no config file, and stdin not a terminal.
    pub fn hsm_csr(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsm-csr"));
        cmd.env("SOFTHSM2_CONF", self.conf())
            .env("HSM_CSR_PIN", PIN)
            .env_remove("HSM_CSR_CONFIG")
            .stdin(Stdio::null());
        cmd
    }

    /// `hsm-csr create --module M --token LABEL ARGS...`.
    pub fn create(&self, args: &[&str]) -> Run {
        let mut cmd = self.hsm_csr();
        cmd.args(["create", "--module", MODULE, "--token", LABEL])
            .args(args);
        Run::of(&mut cmd)
    }

    /// Key objects on the token, as PyKCS11 sees them.
    pub fn keys(&self) -> Vec<Value> {
        let out = Command::new(python())
            .arg(repo().join("tests/tools/p11inspect.py"))
            .args([MODULE, LABEL])
            .env("SOFTHSM2_CONF", self.conf())
            .env("HSM_CSR_PIN", PIN)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "p11inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["keys"].as_array().unwrap().clone()
    }

    /// `pkcs11-tool --module M --token-label LABEL --login ARGS...`.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                LABEL,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .expect("pkcs11-tool (apt-get install opensc)");
        assert!(
            out.status.success(),
            "pkcs11-tool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(cmd: &mut Command) -> Run {
        let out = cmd.output().expect("run hsm-csr");
        Run::from(out)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "stderr:\n{}", self.stderr);
        self
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has PyKCS11: `HSM_CSR_TEST_PYTHON`, else the venv
/// scripts/test.sh makes.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HSM_CSR_TEST_PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv-test/bin/python");
    assert!(
        venv.exists(),
        "no Python with PyKCS11: run scripts/test.sh (it makes .venv-test)"
    );
    venv
}

/// Runs `openssl ARGS` with `stdin`, asserting success; returns stdout bytes.
pub fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `openssl req -verify -noout -text` on a PEM CSR; returns the text.
pub fn verified_text(csr_pem: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-verify", "-noout", "-text", "-nameopt", "compat"]);
    let out = {
        use std::io::Write;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(csr_pem.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl req -verify failed: {stderr}");
    // OpenSSL 3 prints the verdict on stderr.
    assert!(stderr.contains("verify OK"), "no 'verify OK': {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// PubMd5 as openssl computes it: MD5 of `openssl req -pubkey | openssl pkey -pubin -outform DER`.
pub fn openssl_pub_md5(csr_pem: &str) -> String {
    let pubkey = openssl(&["req", "-pubkey", "-noout"], csr_pem.as_bytes());
    let der = openssl(&["pkey", "-pubin", "-outform", "DER"], &pubkey);
    let md5 = openssl(&["md5", "-r"], &der);
    String::from_utf8(md5)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
