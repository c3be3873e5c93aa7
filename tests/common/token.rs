//! The token a test runs against, and how a test says it cannot run on it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{PIN, Run, SOFTHSM, python, repo};

/// The token a test runs against.
///
/// By default each test gets a private SoftHSM2 token, made by the script
/// the quick start uses. When `HSM_CSR_TEST_MODULE` is set (scripts/test.sh
/// sources a `scripts/tokens/*.env` file), every test shares that token and
/// tells its keys apart by a label prefix of its own; such runs use one test
/// thread, since several processes on one token trip up some modules.
pub struct Token {
    dir: tempfile::TempDir,
    /// Name for messages: `softhsm-private`, `opencryptoki`, ...
    pub name: String,
    pub module: String,
    /// The CKA token label.
    pub label: String,
    /// What `--token` gets: the label, or a URI where the label alone
    /// cannot be read back (openCryptoki).
    pub token_arg: String,
    /// Every key this test makes is labelled with this prefix.
    pub prefix: String,
    private: bool,
    unsupported: Vec<String>,
}

impl Token {
    pub fn new() -> Token {
        let dir = tempfile::Builder::new()
            .prefix("hsm-csr-test-")
            .tempdir()
            .unwrap();
        let prefix = format!(
            "t{}:",
            &dir.path().file_name().unwrap().to_string_lossy()[13..]
        );
        if let Ok(module) = std::env::var("HSM_CSR_TEST_MODULE") {
            let label = std::env::var("HSM_CSR_TEST_LABEL").expect("HSM_CSR_TEST_LABEL");
            let token_arg = match std::env::var("HSM_CSR_TEST_SLOT_ID") {
                Ok(id) => format!("pkcs11:token={label};slot-id={id}"),
                Err(_) => label.clone(),
            };
            return Token {
                dir,
                name: std::env::var("HSM_CSR_TEST_NAME").unwrap_or_else(|_| label.clone()),
                module,
                label,
                token_arg,
                prefix,
                private: false,
                unsupported: std::env::var("HSM_CSR_TEST_UNSUPPORTED")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect(),
            };
        }
        let status = Command::new("bash")
            .arg(repo().join("scripts/make-softhsm-token.sh"))
            .arg(dir.path().join("store"))
            .arg("test-token")
            .env("TOKEN_PIN", PIN)
            .status()
            .expect("bash");
        assert!(
            status.success(),
            "make-softhsm-token.sh failed: is softhsm2 installed? Run scripts/test.sh"
        );
        Token {
            dir,
            name: "softhsm-private".into(),
            module: SOFTHSM.into(),
            label: "test-token".into(),
            token_arg: "test-token".into(),
            prefix,
            private: true,
            unsupported: Vec::new(),
        }
    }

    /// A private SoftHSM2 token, or None (with the reason printed) when the
    /// suite runs against a shared token.
    pub fn private_softhsm(why: &str) -> Option<Token> {
        let token = Token::new();
        if token.private {
            Some(token)
        } else {
            skip(&token, &format!("needs a private SoftHSM2 token ({why})"));
            None
        }
    }

    pub fn is_private_softhsm(&self) -> bool {
        self.private
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private SoftHSM token's config (private tokens only).
    pub fn conf(&self) -> PathBuf {
        assert!(self.private);
        self.dir.path().join("store/softhsm2.conf")
    }

    /// Appends `line` to the private SoftHSM token's config.
    pub fn softhsm_conf_line(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.conf())
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    fn env(&self, cmd: &mut Command) {
        if self.private {
            cmd.env("SOFTHSM2_CONF", self.conf());
        }
        // The command line's in-flight notes (src/cli/in_flight.rs), kept
        // apart from other tests' and from the user's.
        cmd.env("XDG_STATE_HOME", self.dir().join("state"));
    }

    /// `hsm-csr` with this token's environment and PIN, no config file,
    /// and stdin not a terminal.
    pub fn hsm_csr(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsm-csr"));
        self.env(&mut cmd);
        cmd.env("HSM_CSR_PIN", PIN)
            .env_remove("HSM_CSR_CONFIG")
            .stdin(Stdio::null());
        cmd
    }

    /// The flags that name this token.
    pub fn token_flags(&self) -> Vec<String> {
        vec![
            "--module".into(),
            self.module.clone(),
            "--token".into(),
            self.token_arg.clone(),
        ]
    }

    /// `hsm-csr create --module M --token T --label-prefix P ARGS...`.
    pub fn create(&self, args: &[&str]) -> Run {
        let mut cmd = self.hsm_csr();
        cmd.arg("create")
            .args(self.token_flags())
            .args(["--label-prefix", &self.prefix])
            .args(args);
        Run::of(&mut cmd)
    }

    /// `hsm-csr SUBCOMMAND... --module M --token T ARGS...`.
    pub fn run(&self, subcommand: &[&str], args: &[&str]) -> Run {
        let mut cmd = self.hsm_csr();
        cmd.args(subcommand).args(self.token_flags()).args(args);
        Run::of(&mut cmd)
    }

    /// Whether several processes can use the token at once. Not tpm2-pkcs11:
    /// its sqlite store refuses a second writer ("database is locked"), and
    /// a process sees the objects another made only once it reopens the
    /// token. Where they cannot, this reports the test skipped, saying why.
    pub fn shared_by_processes(&self, what: &str) -> bool {
        if self.name != "tpm2" {
            return true;
        }
        skip(
            self,
            &format!(
                "{what}: tpm2-pkcs11's store takes one writing process at a time, and shows a \
                 process another's new objects only after it reopens the token"
            ),
        );
        false
    }

    /// How many key pairs one process can make on the token. tpm2-pkcs11
    /// keeps every key it made or used loaded in the TPM until C_Logout (two
    /// transient objects a pair), and tpm2-abrmd refuses a connection's
    /// objects past `--max-transients` (at most 100, as scripts/tokens
    /// starts it): about 50.
    pub fn keys_per_process(&self) -> usize {
        if self.name == "tpm2" { 50 } else { usize::MAX }
    }

    /// EC P-256, or RSA-2048 on a token without EC (openCryptoki's soft
    /// token): for tests that need a key, not a key type.
    pub fn ec_or_rsa(&self) -> &'static str {
        if self.lacks("ec-p256") {
            "rsa-2048"
        } else {
            "ec-p256"
        }
    }

    /// Whether the token is known not to do `case` (e.g. `ed25519`).
    pub fn lacks(&self, case: &str) -> bool {
        self.unsupported.iter().any(|c| c == case)
    }

    /// `create` for a case the token may lack: on such a token, checks that
    /// hsm-csr refuses it with Token.MechanismUnsupported before making a
    /// key, prints the skip, and returns None.
    pub fn create_case(&self, case: &str, args: &[&str]) -> Option<Run> {
        let before = self.keys().len();
        let run = self.create(args);
        if !self.lacks(case) {
            return Some(run.ok());
        }
        assert_eq!(run.code, 3, "{case} on {}: {}", self.name, run.stderr);
        assert!(
            run.stderr.contains("Token.MechanismUnsupported"),
            "{case} on {}: {}",
            self.name,
            run.stderr
        );
        assert_eq!(
            self.keys().len(),
            before,
            "a refused {case} left a key behind"
        );
        skip_part(
            self,
            &format!("{case} is not offered; hsm-csr refused it before keygen"),
        );
        None
    }

    /// This test's certificate objects (labelled with its prefix), as
    /// pkcs11-tool lists them: one text block each.
    pub fn certificates(&self) -> Vec<String> {
        let all = self.pkcs11_tool(&["--list-objects", "--type", "cert"]);
        let mine = format!("label:      {}", self.prefix);
        all.split("Certificate Object")
            .filter(|o| o.lines().any(|l| l.trim_start().starts_with(&mine)))
            .map(str::to_owned)
            .collect()
    }

    /// This test's key objects on the token, as PyKCS11 sees them.
    pub fn keys(&self) -> Vec<Value> {
        self.try_keys().unwrap_or_else(|e| panic!("p11inspect: {e}"))
    }

    /// [`Token::keys`], or what p11inspect said when it failed (an object
    /// can go or come between its search and its reads).
    pub fn try_keys(&self) -> Result<Vec<Value>, String> {
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/tools/p11inspect.py"))
            .args([&self.module, &self.label])
            .env("HSM_CSR_PIN", PIN);
        self.env(&mut cmd);
        let out = cmd.output().unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        Ok(v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["label"].as_str().unwrap_or("").starts_with(&self.prefix))
            .cloned()
            .collect())
    }

    /// This test's keys (label prefix) as `hsm-csr keys list --format json`
    /// shows them.
    pub fn listed(&self) -> Vec<Value> {
        let run = self.run(&["keys", "list"], &["--format", "json"]).ok();
        let all: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
        all.into_iter()
            .filter(|k| k["Label"].as_str().unwrap_or("").starts_with(&self.prefix))
            .collect()
    }

    /// `pkcs11-tool --module M --token-label LABEL --login ARGS...`.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("pkcs11-tool");
        cmd.args([
            "--module",
            &self.module,
            "--token-label",
            &self.label,
            "--login",
            "--pin",
            PIN,
        ])
        .args(args);
        self.env(&mut cmd);
        let out = cmd.output().expect("pkcs11-tool (apt-get install opensc)");
        assert!(
            out.status.success(),
            "pkcs11-tool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A `[token]` table naming this token, with `pin_file`.
    pub fn config_token_table(&self, pin_file: &str) -> String {
        let mut t = format!(
            "[token]\nmodule = \"{}\"\nlabel = \"{}\"\npin_file = \"{pin_file}\"\n",
            self.module, self.label
        );
        if let Ok(id) = std::env::var("HSM_CSR_TEST_SLOT_ID") {
            if !self.private {
                t.push_str(&format!("slot_id = {id}\n"));
            }
        }
        t
    }

    /// An `openssl` command that has this token's environment.
    pub fn openssl(&self) -> Command {
        let mut cmd = Command::new("openssl");
        self.env(&mut cmd);
        cmd
    }
}

/// Reports that this test does not run on `token`, and why; the caller
/// returns at once. On stderr, and in `HSM_CSR_TEST_SKIP_LOG`, from which
/// scripts/test.sh counts it as skipped, never as passed (the harness
/// counts every test that returns as passed, and hides its output).
pub fn skip(token: &Token, reason: &str) {
    log_skip("SKIPPED", token, reason);
}

/// Reports that one part of this test does not run on `token` (a case the
/// token cannot do); the rest of the test runs and counts.
pub fn skip_part(token: &Token, reason: &str) {
    log_skip("PART SKIPPED", token, reason);
}

fn log_skip(what: &str, token: &Token, reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let line = format!("{what} {test} on {}: {reason}", token.name);
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("HSM_CSR_TEST_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
