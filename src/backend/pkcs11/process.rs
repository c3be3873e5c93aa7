//! Who this process is, and whether another process runs: the owner a
//! mark names, told by `/proc` on this host
//! (how each field is made: [`super::id`]).

use std::sync::OnceLock;

use super::id::{KIND_LEASED, Owner};

impl Owner {
    /// For people: `pid 1234 on host 0a1b2c3d (this host)`.
    pub fn describe(&self) -> String {
        let here = if self.host == this_host() {
            " (this host)"
        } else {
            ""
        };
        let lease = if self.kind == KIND_LEASED {
            ", Redis lease"
        } else {
            ""
        };
        format!(
            "pid {} on host {}{here}{lease}",
            self.pid,
            crate::fingerprint::hex(&self.host)
        )
    }

    /// This process, as the owner of the keys it makes.
    pub fn this_process(kind: u8) -> Owner {
        let pid = std::process::id();
        Owner {
            kind,
            host: this_host(),
            pid,
            start: start_of(pid).unwrap_or_default(),
        }
    }

    /// Process `pid` of this host, while it runs.
    pub fn of_process(pid: u32, kind: u8) -> Option<Owner> {
        Some(Owner {
            kind,
            host: this_host(),
            pid,
            start: start_of(pid)?,
        })
    }
}

fn sha256_4(parts: &[&[u8]]) -> [u8; 4] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    // The first 4 of SHA-256's 32 bytes.
    ctx.finish()
        .as_ref()
        .first_chunk()
        .copied()
        .unwrap_or_default()
}

fn read_trimmed(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// This host and PID namespace.
pub(super) fn this_host() -> [u8; 4] {
    static HOST: OnceLock<[u8; 4]> = OnceLock::new();
    *HOST.get_or_init(|| {
        let machine = read_trimmed("/etc/machine-id")
            .or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
            .unwrap_or_default();
        // The host name too: VMs cloned from one image may share a
        // machine id, and the initial PID namespace has the same inode on
        // every host.
        let name = read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default();
        let ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        sha256_4(&[machine.as_bytes(), name.as_bytes(), ns.as_bytes()])
    })
}

/// Whether `/proc` shows this process and init: else a missing
/// `/proc/<pid>` says nothing about whether `pid` runs.
pub(super) fn sees_every_process() -> bool {
    static SEES: OnceLock<bool> = OnceLock::new();
    *SEES.get_or_init(|| start_of(std::process::id()).is_some() && start_of(1).is_some())
}

/// The start hash of process `pid` on this host, None when it does not run.
pub(super) fn start_of(pid: u32) -> Option<[u8; 4]> {
    static BOOT: OnceLock<String> = OnceLock::new();
    let boot =
        BOOT.get_or_init(|| read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything,
    // spaces and ')' included: fields are counted after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after ')'; field 22 (starttime) the 20th.
    let mut fields = after.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let start = fields.nth(18)?;
    Some(sha256_4(&[boot.as_bytes(), start.as_bytes()]))
}
