//! Shared helpers: a private SoftHSM2 token per test, the built binary, and
//! the outside tools that check its output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod a2c;
pub mod pebble;
pub mod ports;
pub mod redis;
pub mod rpc;
pub mod serve_config;
pub mod server;
pub mod spy;
mod token;

pub use token::{Token, skip, skip_part};

use serde_json::Value;

pub const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "1234";

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

/// Runs `cmd` with `stdin` on its standard input, asserting it succeeds;
/// returns its output (stdout and stderr).
pub fn piped(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `openssl ARGS` with `stdin`, asserting success; returns stdout bytes.
pub fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    piped(Command::new("openssl").args(args), stdin).stdout
}

/// `cmd` run by `wrapper` (its program and arguments, then `cmd`'s), with
/// `cmd`'s environment; `cmd` itself when `wrapper` is empty. Set stdio
/// afterwards: it is not carried over.
pub fn wrapped(cmd: Command, wrapper: &[String]) -> Command {
    let Some((program, args)) = wrapper.split_first() else {
        return cmd;
    };
    let mut w = Command::new(program);
    w.args(args).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    w
}

/// The strace prefix (for [`wrapped`]) that makes every `syscall` of the
/// process and its threads wait `micros` before it runs, only those on
/// `path` when one is given (seccomp-bpf: no other call stops).
pub fn delaying(syscall: &str, micros: u64, path: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = ["strace", "-f", "--seccomp-bpf", "-qq", "-o", "/dev/null"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend([
        "-e".into(),
        format!("trace={syscall}"),
        "-e".into(),
        format!("inject={syscall}:delay_enter={micros}"),
    ]);
    if let Some(path) = path {
        args.extend(["-P".into(), path.display().to_string()]);
    }
    args.push("--".into());
    args
}

/// Polls `done` every 50 ms until it holds; fails the test after 30 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// SIGKILLs the children of `child` (what a wrapper such as strace runs),
/// so that killing the wrapper leaves nothing running. Only while `child`
/// has not been reaped: its pid is then still its own (a zombie keeps it).
/// Once reaped, the kernel hands the pid to the next process (it wraps at
/// `pid_max`, 32768 here, soon in a suite that starts thousands), and
/// `pkill -P` would kill the children of a stranger: CI's own shell once.
pub fn kill_children(child: &mut std::process::Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &child.id().to_string()])
            .status();
    }
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// `openssl req -verify -noout -text` on a PEM CSR; returns the text.
pub fn verified_text(csr_pem: &str) -> String {
    let out = piped(
        Command::new("openssl").args(["req", "-verify", "-noout", "-text", "-nameopt", "compat"]),
        csr_pem.as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
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

/// Where `token`'s command-line runs keep their in-flight notes
/// (src/cli/in_flight.rs).
pub fn notes_dir(token: &Token) -> PathBuf {
    token.dir().join("state/hsm-csr/in-flight")
}

/// A `create` on `token` killed once it has left its in-flight note,
/// before its key exists (RSA-4096 takes a while), as a run killed mid-call
/// does: the next command-line run on the token sweeps.
pub fn interrupted_create(token: &Token) {
    let notes = notes_dir(token);
    let count = || std::fs::read_dir(&notes).map_or(0, Iterator::count);
    let before = count();
    let before_keys: Vec<String> = if token.name == "p11kit" {
        token
            .try_keys()
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k["id"].as_str().map(str::to_owned))
            .collect()
    } else {
        Vec::new()
    };
    let mut child = token
        .hsm_csr()
        .arg("create")
        .args(token.token_flags())
        .args(["--label-prefix", &token.prefix])
        .args(["--common-name", "killed.example.com", "--key-type", "rsa"])
        .args(["--key-size", "4096"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count() == before {
        assert!(std::time::Instant::now() < deadline, "create left no note");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    if token.name == "p11kit" {
        await_remote_keygen(token, &before_keys);
    }
}

/// Behind `p11-kit server` the key pair is made in the server's process:
/// killing the client does not stop a C_GenerateKeyPair already sent, and
/// the pair lands on the token afterwards. Waits (up to 10 s) for that pair,
/// so that the next run's sweep finds it, as it would on a local token; a
/// run killed before it asked for a key leaves none, and the wait runs out.
fn await_remote_keygen(token: &Token, before: &[String]) {
    let undelivered = format!("{}undelivered", token.prefix);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let keys = token.try_keys().unwrap_or_default();
        let landed = keys.iter().any(|k| {
            k["class"] == "private"
                && k["label"] == undelivered.as_str()
                && !before.iter().any(|id| k["id"] == id.as_str())
        });
        if landed {
            // Its public half is the next object SoftHSM writes.
            std::thread::sleep(std::time::Duration::from_millis(500));
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
