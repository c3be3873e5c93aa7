//! The crash test: every command that makes keys (`serve` with and
//! without the pool, `create`, `batch`, `acme issue`, `acme renew`) is
//! killed with SIGKILL or SIGINT at random points, with the audit log's
//! open slowed by 0.3 s in every third run (a slow disk: `strace -e
//! inject=openat:delay_enter=300000 -P LOG`), then started once more on
//! the same token. Then every key pair on the token must be one its caller
//! received, an unassigned pool key, or one whose answer was released but
//! not read (its `delivered` event is in the log: the window
//! docs/deployment-keys.md lists); anything else is an orphan. Every
//! received key must still be there with exactly one `delivered` event.
//!
//! `HSM_CSR_CRASH_RUNS` sets the killed runs per mode (9). Each mode
//! prints one line of counts (and appends it to the file
//! `HSM_CSR_CRASH_REPORT` names, which scripts/test.sh prints). The kill
//! points come from a seed printed with the counts; `HSM_CSR_CRASH_SEED`
//! replays one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Token, wrapped};

mod acme;
mod cli;
mod serve;

/// Runs per mode that are killed: 9, or `HSM_CSR_CRASH_RUNS`.
fn runs() -> usize {
    std::env::var("HSM_CSR_CRASH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(9)
}

/// The signal a run gets.
#[derive(Clone, Copy, Debug)]
enum Signal {
    Kill,
    Int,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Kill => "KILL",
            Signal::Int => "INT",
        }
    }
}

/// The kill points: a small xorshift generator, seeded from the clock or
/// `HSM_CSR_CRASH_SEED`.
struct Plan {
    seed: u64,
    state: u64,
}

impl Plan {
    fn new() -> Plan {
        let seed = std::env::var("HSM_CSR_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
                    .into()
            });
        Plan {
            seed,
            state: seed | 1,
        }
    }

    /// A delay between `from` and `to` milliseconds.
    fn delay(&mut self, from: u64, to: u64) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Duration::from_millis(from + self.state % (to - from + 1))
    }

    /// A point within a run that takes `full` (10% past its end, so
    /// that some runs end before their signal); `slowed` runs take 0.6 s
    /// longer (two audit events).
    fn within(&mut self, full: Duration, slowed: bool) -> Duration {
        let ms = u64::try_from(full.as_millis() * 11 / 10).unwrap_or(u64::MAX);
        self.delay(0, ms + if slowed { 600 } else { 0 })
    }

    /// Run `i`'s signal (alternating) and whether its audit log is slowed.
    fn run(i: usize) -> (Signal, bool) {
        let signal = if i % 2 == 0 {
            Signal::Kill
        } else {
            Signal::Int
        };
        (signal, i % 3 == 2)
    }
}

/// The strace prefix that slows every open of `log` by 0.3 s, and nothing
/// else.
fn slowing(log: &Path) -> Vec<String> {
    crate::common::delaying("openat", 300_000, Some(log))
}

/// The hsm-csr process `pid` runs: itself, or a wrapper's child. Killing
/// strace would detach it and leave it running.
fn hsm_csr_pid(pid: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut at = pid;
    loop {
        let comm = std::fs::read_to_string(format!("/proc/{at}/comm")).unwrap_or_default();
        if comm.trim() == "hsm-csr" {
            return at;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{at}/task/{at}/children")).unwrap_or_default();
        match children.split_whitespace().next() {
            Some(child) => at = child.parse().unwrap(),
            None => {
                assert!(Instant::now() < deadline, "no hsm-csr under process {pid}");
                std::thread::sleep(Duration::from_millis(5));
                at = pid;
            }
        }
    }
}

/// Sends `signal` to hsm-csr process `pid` if it is still one: a grandchild
/// (under strace) is reaped as soon as it ends, and its pid may then be
/// another process's.
fn signal_hsm_csr(pid: u32, signal: Signal) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "hsm-csr" {
        self::signal(pid, signal);
    }
}

fn signal(pid: u32, signal: Signal) {
    assert!(pid > 1, "signal {} to pid {pid}", signal.name());
    // The process may have ended by itself already.
    let _ = Command::new("kill")
        .args([&format!("-{}", signal.name()), &pid.to_string()])
        .status();
}

/// Waits until process `pid` has ended (gone, or a zombie), up to `secs`
/// seconds; then SIGKILLs it and fails.
fn ended_within(pid: u32, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) STATE ...": the state follows the last ')'.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if stat.is_empty() || state.starts_with('Z') {
            return;
        }
        if Instant::now() > deadline {
            signal(pid, Signal::Kill);
            panic!("{what} did not stop within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawns `cmd` (stdout piped, stderr null), kills its hsm-csr process with
/// `sig` after `after`, and returns its stdout.
fn interrupted(mut cmd: Command, after: Duration, sig: Signal, what: &str) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let target = hsm_csr_pid(child.id());
    std::thread::sleep(after);
    signal_hsm_csr(target, sig);
    // A SIGINT'ed run must stop by itself.
    ended_within(child.id(), 30, what);
    let _ = child.wait();
    reader.join().unwrap()
}

/// Runs `cmd` to its end, which must be a success: how long it took,
/// and its stdout. The kill points of a mode are drawn from this run's
/// length, measured under the same load.
fn timed(mut cmd: Command) -> (Duration, String) {
    let started = Instant::now();
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (started.elapsed(), String::from_utf8(out.stdout).unwrap())
}

/// The PubMd5 of every whole JSON value in `text` (pretty or one per
/// line; an answer cut in the middle is not a received one), and of each
/// of `acme renew`'s `Renewed`.
fn answered(text: &str) -> Vec<String> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map_while(std::result::Result::ok)
        .flat_map(|v| {
            let renewed: Vec<Value> = v["Renewed"].as_array().cloned().unwrap_or_default();
            std::iter::once(v).chain(renewed)
        })
        .filter_map(|v| v["PubMd5"].as_str().map(str::to_owned))
        .collect()
}

/// One mode's runs and what they left.
#[derive(Default)]
struct Tally {
    runs: usize,
    sigkill: usize,
    sigint: usize,
    slowed: usize,
    received: BTreeSet<String>,
    /// Runs after which SoftHSM's token.object was found cut short.
    token_object_torn: usize,
}

/// SoftHSM's token.object (label, serial, wrapped PINs, flags): SoftHSM
/// truncates and rewrites it on every successful C_Login (it clears
/// CKF_USER_PIN_COUNT_LOW), so a process killed in between leaves it cut
/// short and the token gone, whichever application it was. Each run is
/// preceded by a copy of it; one found cut short afterwards is put back and
/// counted (docs/tokens.md: what an operator does).
struct TokenObject {
    path: PathBuf,
    copy: Vec<u8>,
}

impl TokenObject {
    fn of(token: &Token) -> TokenObject {
        let tokens = token.conf().parent().unwrap().join("tokens");
        let path = std::fs::read_dir(&tokens)
            .unwrap()
            .map(|e| e.unwrap().path().join("token.object"))
            .find(|p| p.exists())
            .expect("a SoftHSM token directory");
        let copy = std::fs::read(&path).unwrap();
        TokenObject { path, copy }
    }

    /// Whether a run cut the file short; puts the copy back if so.
    fn restore_if_torn(&self) -> bool {
        let now = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        // Only the flags and the generation change, in place: same length.
        if now == self.copy.len() as u64 {
            return false;
        }
        std::fs::write(&self.path, &self.copy).unwrap();
        true
    }
}

impl Tally {
    /// Counts a run; `token` is SoftHSM's token.object as it was before.
    fn ran(&mut self, sig: Signal, slowed: bool, token: &TokenObject) {
        self.token_object_torn += usize::from(token.restore_if_torn());
        self.runs += 1;
        match sig {
            Signal::Kill => self.sigkill += 1,
            Signal::Int => self.sigint += 1,
        }
        self.slowed += usize::from(slowed);
    }

    fn received(&mut self, md5s: impl IntoIterator<Item = String>) {
        for md5 in md5s {
            assert!(
                self.received.insert(md5.clone()),
                "key {md5} went to two callers"
            );
        }
    }

    /// Counts what the token holds after the restart, checks it, and
    /// reports the counts.
    fn check(self, mode: &str, plan: &Plan, token: &Token, audit: &Path) {
        self.check_unread(mode, plan, token, audit, true);
    }

    /// [`Self::check`]; `unread` says whether a key may have been answered
    /// and not read (false where every answer is written to a file the
    /// test reads: `batch --output`).
    fn check_unread(self, mode: &str, plan: &Plan, token: &Token, audit: &Path, unread_ok: bool) {
        let events: Vec<Value> = std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e["event"] == "delivered") {
            *delivered
                .entry(e["pub_md5"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        let lone_before = lone(token);
        if !lone_before.is_empty() {
            // `keys prune --orphans` is what removes them on the command
            // line (serve's first pass does too).
            let prune = config(token, "prune.toml", audit, "");
            token
                .run(
                    &["keys", "prune"],
                    &["--orphans", "--yes", "--config", prune.to_str().unwrap()],
                )
                .ok();
        }
        let lone_after = lone(token);
        let listed = token.listed();
        let unassigned_label = format!("{}pool:unassigned", token.prefix);
        let (mut kept, mut unread, mut unassigned) = (0, 0, 0);
        let mut orphans = Vec::new();
        let mut on_token = BTreeSet::new();
        for k in &listed {
            let md5 = k["PubMd5"].as_str().unwrap_or_default().to_owned();
            on_token.insert(md5.clone());
            if self.received.contains(&md5) {
                kept += 1;
            } else if k["Label"] == unassigned_label.as_str() {
                unassigned += 1;
            } else if delivered.get(&md5) == Some(&1) {
                unread += 1;
            } else {
                orphans.push(k.clone());
            }
        }
        let line = format!(
            "crash {mode:<17} seed={:<10} runs={} (SIGKILL {}, SIGINT {}, audit open slowed {}): \
             received={} kept={kept} answered-unread={unread} pool-unassigned={unassigned} \
             lone-objects={} (after keys prune --orphans: {}) orphans={} \
             (SoftHSM token.object cut short: {})",
            plan.seed,
            self.runs,
            self.sigkill,
            self.sigint,
            self.slowed,
            self.received.len(),
            lone_before.len(),
            lone_after.len(),
            orphans.len(),
            self.token_object_torn
        );
        eprintln!("{line}");
        if let Some(path) = std::env::var_os("HSM_CSR_CRASH_REPORT") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .unwrap();
            writeln!(f, "{line}").unwrap();
        }
        assert!(orphans.is_empty(), "{line}\norphans: {orphans:#?}");
        assert!(
            unread_ok || unread == 0,
            "{line}\nkeys settled whose answers are not in the output"
        );
        assert!(
            lone_after.is_empty(),
            "{line}\nlone objects: {lone_after:?}"
        );
        for md5 in &self.received {
            assert!(on_token.contains(md5), "{line}\nreceived key {md5} is gone");
            assert_eq!(
                delivered.get(md5),
                Some(&1),
                "{line}\nreceived key {md5}: delivered events"
            );
        }
        for (md5, n) in &delivered {
            assert_eq!(*n, 1, "{line}\n{md5} has {n} delivered events");
        }
    }
}

/// CKA_IDs of this test's lone objects: key objects without their other
/// half (torn SoftHSM writes), and certificates without a key (an `acme`
/// run killed after storing the certificate, before the key's final
/// identity: the documented window, its key swept as undelivered).
fn lone(token: &Token) -> Vec<String> {
    let mut classes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in token.keys() {
        classes
            .entry(o["id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(o["class"].as_str().unwrap_or_default().to_owned());
    }
    let certificates = token
        .listed()
        .into_iter()
        .filter(|k| k["HasPrivateKey"] == false && k["HasPublicKey"] == false)
        .map(|k| k["Id"].as_str().unwrap_or_default().to_owned());
    classes
        .into_iter()
        .filter(|(_, c)| c.len() != 2)
        .map(|(id, _)| id)
        .chain(certificates)
        .collect()
}

/// A config `name` with the test's label prefix and `[audit] path = log`
/// (and `more` in `[key]`), for the command-line modes.
fn config(token: &Token, name: &str, log: &Path, more: &str) -> PathBuf {
    let path = token.dir().join(name);
    std::fs::write(
        &path,
        format!(
            "[key]\nlabel_prefix = \"{}\"\n{more}\n[audit]\npath = \"{}\"\n",
            token.prefix,
            log.display()
        ),
    )
    .unwrap();
    path
}
