//! The "not yet delivered" mark every key pair carries from the moment it
//! is made, so that a process that dies mid-call (SIGKILL, power loss, a
//! replica gone) leaves nothing a restart or another replica cannot find;
//! the mark's bytes are in [`super::id`]. Here: whether the owner a mark
//! names still runs ([`liveness`]), and what replicas share to tell
//! ([`Coordinator`]).

use super::id::{KIND_LEASED, KIND_PROCESS, Owner};
use super::process::{sees_every_process, start_of, this_host};
use crate::error::Result;

/// Whether an owner runs, as far as this process can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Running: its keys are left alone.
    Alive,
    /// Gone: its undelivered keys may be removed.
    Dead,
    /// Cannot be told from here (another host without a lease, or Redis
    /// unreachable): left alone, and reported.
    Unknown,
}

/// What replicas share: pool claims and owner leases. The default,
/// [`InProcess`], shares nothing (one process per pool and token).
pub(crate) trait Coordinator: Send + Sync + std::fmt::Debug {
    /// How this process marks its keys.
    fn owner(&self) -> Owner;

    /// Claims pool key `pool_id` of token `serial` for this process,
    /// atomically across replicas: true for the one winner, and for it
    /// again should it ask again.
    ///
    /// # Errors
    /// When the claim cannot be recorded, or its answer was lost: nobody
    /// may take the key then. It goes back to this process's pool, and a
    /// claim recorded all the same is this process's next claim of it.
    fn claim(&self, serial: &str, pool_id: &[u8]) -> Result<bool>;

    /// Whether another process holds a claim on `pool_id`: adoption skips it.
    ///
    /// # Errors
    /// When that cannot be known: then the key is not adopted.
    fn claimed(&self, serial: &str, pool_id: &[u8]) -> Result<bool>;

    /// Whether the leased `owner` (on another host) still holds its lease.
    fn lease_alive(&self, owner: &Owner) -> Liveness;

    /// Whether this process may still deliver a key it marked: a leased
    /// owner whose lease may have lapsed must not, another replica may be
    /// sweeping its keys.
    fn may_deliver(&self) -> bool {
        true
    }

    /// Whether other processes take keys from the same pools (replicas
    /// sharing Redis); without, a pool key is only ever this process's.
    fn is_shared(&self) -> bool {
        false
    }
}

/// Nothing shared: claims always succeed (the pool's own lock makes them
/// exclusive within the process), owners on other hosts are unknown.
#[derive(Debug, Default)]
pub(crate) struct InProcess;

impl Coordinator for InProcess {
    fn owner(&self) -> Owner {
        Owner::this_process(KIND_PROCESS)
    }
    fn claim(&self, _: &str, _: &[u8]) -> Result<bool> {
        Ok(true)
    }
    fn claimed(&self, _: &str, _: &[u8]) -> Result<bool> {
        Ok(false)
    }
    fn lease_alive(&self, _: &Owner) -> Liveness {
        Liveness::Unknown
    }
}

/// Whether `owner` runs: on this host from `/proc`, elsewhere from its
/// lease through `coordinator` (when it has one).
pub(crate) fn liveness(owner: &Owner, coordinator: &dyn Coordinator) -> Liveness {
    if owner.host == this_host() {
        return match start_of(owner.pid) {
            Some(start) if start == owner.start => Liveness::Alive,
            Some(_) => Liveness::Dead,
            // Without /proc, or with other users' processes hidden
            // (hidepid), a process we cannot see may still run.
            None if sees_every_process() => Liveness::Dead,
            None => Liveness::Unknown,
        };
    }
    if owner.kind == KIND_LEASED {
        coordinator.lease_alive(owner)
    } else {
        Liveness::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_lives_and_a_gone_or_reused_pid_does_not() {
        let me = Owner::this_process(KIND_PROCESS);
        assert_eq!(liveness(&me, &InProcess), Liveness::Alive);
        // The same PID with another start: a reused PID.
        let reused = Owner {
            start: [!me.start[0], 0, 0, 0],
            ..me
        };
        assert_eq!(liveness(&reused, &InProcess), Liveness::Dead);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Owner { pid, ..me };
        assert_eq!(liveness(&gone, &InProcess), Liveness::Dead);
        // Another host, no lease: nobody here can tell.
        let elsewhere = Owner {
            host: [!me.host[0], 1, 2, 3],
            ..me
        };
        assert_eq!(liveness(&elsewhere, &InProcess), Liveness::Unknown);
    }
}
