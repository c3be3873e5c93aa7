//! The session pool's background thread: the periodic sweep for
//! undelivered key pairs ([`crate::backend::pkcs11::sweep`]) and the
//! periodic pass over every key (owners, retention).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::pkcs11::Pkcs11Backend;

/// Sweeps on `backend` every `every`, until `stop`, the pairs labelled
/// `label` only; and, with `inventory`, makes its pass over every key at
/// once and then every `inventory.every`.
pub(super) fn spawn_sweeper(
    mut backend: Pkcs11Backend,
    every: Duration,
    label: String,
    stop: Arc<AtomicBool>,
    inventory: Option<Arc<crate::retention::Inventory>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now() + every;
        // The first pass ran before the sweeper started
        // ([`crate::session_pool::SessionPool::start_key_pool`]).
        let mut next_inventory = Instant::now()
            + inventory
                .as_deref()
                .map_or(Duration::ZERO, |pass| pass.every);
        let at_start = false;
        while !stop.load(Ordering::Relaxed) {
            if let Some(pass) = inventory
                .as_deref()
                .filter(|_| Instant::now() >= next_inventory)
            {
                let passed = crate::retention::inventory_pass(&mut backend, pass, at_start);
                if let Err(e) = passed {
                    log::warn!("pass over the token's keys (owners, retention) failed: {e}");
                }
                next_inventory = Instant::now() + pass.every;
            }
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            if let Err(e) = backend.sweep_undelivered(false, Some(&label)) {
                log::warn!("sweep for undelivered key pairs failed: {e}");
            }
            // What other processes made and removed shows in the budget.
            if let Err(e) = backend.recount_objects() {
                log::warn!("counting the token's objects failed: {e}");
            }
            next = Instant::now() + every;
        }
    })
}
