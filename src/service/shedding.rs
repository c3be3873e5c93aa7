//! Making room at the connection limit: the open connections, and the one
//! that has waited longest for its client, which is closed when a new
//! client needs its place (see [`Clock::waiting_since`] for who may be).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::deadline::Clock;

/// The open connections, so that the one that has waited longest for a
/// request can be asked to close when a new client needs its place.
#[derive(Default)]
pub(super) struct Open {
    next: AtomicU64,
    connections: Mutex<HashMap<u64, OpenConnection>>,
}

/// An open connection's clock, and how to ask it to close.
type OpenConnection = (Arc<Clock>, Arc<Notify>);

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenConnection>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn add(&self, clock: Arc<Clock>, shed: Arc<Notify>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (clock, shed));
        id
    }

    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Asks the connection that has waited longest for its client (see
    /// [`Clock::waiting_since`]) to close. False when there is none: every
    /// connection is being served, or too young to judge.
    fn shed_one(&self) -> bool {
        let now = Instant::now();
        let open = self.lock();
        let victim = open
            .values()
            .filter_map(|(clock, shed)| Some((clock.waiting_since(now)?, shed)))
            .min_by_key(|(since, _)| *since);
        match victim {
            Some((_, shed)) => {
                shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A permit for a connection just accepted: a free one, or the one an
/// idle or slow connection gives back when asked to make room (see
/// [`Open::shed_one`]). While every connection is busy with a request this
/// waits, and the listen backlog holds further clients. None once `stop`
/// completes.
pub(super) async fn place_for(
    permits: &Arc<Semaphore>,
    open: &Open,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
            return Some(permit);
        }
        let shed = open.shed_one();
        tokio::select! {
            () = stop.as_mut() => return None,
            permit = Arc::clone(permits).acquire_owned() => return permit.ok(),
            // A shed connection gives its permit back at once; a busy one
            // may turn idle later, so look again now and then.
            () = tokio::time::sleep(if shed { SHED_WAIT } else { BUSY_WAIT }) => {}
        }
    }
}

/// How long a shed connection may take to give back its permit before
/// another is asked.
const SHED_WAIT: Duration = Duration::from_millis(200);

/// How often to look for a connection to shed while all are busy.
const BUSY_WAIT: Duration = Duration::from_millis(50);
