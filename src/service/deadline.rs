//! Per-connection deadlines: how long a client may take to send a request
//! head, sit idle between requests, or leave a response unread.
//!
//! hyper's own `header_read_timeout` is not used: since hyper 1.6 (PR #3828)
//! it also runs while a kept-alive connection is idle, so it would close idle
//! connections after `header_timeout_ms` and `idle_timeout_ms` could never be
//! longer. Here the two are separate: the idle deadline runs from the end of
//! a response until the next request's first byte, and the header deadline
//! from that byte (from the accept, for the first request; the TLS handshake
//! counts towards it) until its head is complete. Bytes that trickle in do
//! not move either deadline. The body and the work of a request are bounded
//! by the handler (`body_timeout_ms`, `request_timeout_ms`), not here.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The connection timeouts of `[service]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Timeouts {
    /// From the accept, or from a request's first byte, until its head is in.
    pub header: Duration,
    /// From the end of a response until the next request's first byte; also
    /// how long a response may wait for a client that reads none of it.
    pub idle: Duration,
}

/// `t + d`, or as good as never for a timeout too large to add.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(100 * 365 * 86_400))
}

/// Where a connection is in its request cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Receiving a request head, which must be complete by the deadline.
    Head(Instant),
    /// Between requests: the next one must start by the deadline.
    Idle(Instant),
    /// The handler waits for the request's body, since the given time; it
    /// bounds that wait itself (`body_timeout_ms`), but the time is the
    /// client's.
    Body(Instant),
    /// The handler has the whole request and works on it.
    Busy,
}

/// How long a connection is left alone after it is accepted before it may be
/// closed to make room for another: time for a client that means it to send
/// its request, TLS handshake included.
pub(super) const SHED_AFTER: Duration = Duration::from_secs(2);

/// The phase of one connection, shared by its I/O and its service.
#[derive(Debug)]
pub(super) struct Clock {
    phase: Mutex<Phase>,
    timeouts: Timeouts,
    accepted: Instant,
}

impl Clock {
    /// A connection accepted at `accepted`: its first head is due by
    /// `accepted + timeouts.header`.
    pub(super) fn new(accepted: Instant, timeouts: Timeouts) -> Arc<Clock> {
        Arc::new(Clock {
            phase: Mutex::new(Phase::Head(after(accepted, timeouts.header))),
            timeouts,
            accepted,
        })
    }

    fn set(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        *phase = f(*phase);
    }

    /// A request head is complete and goes to the handler; `body_follows`
    /// when the client has a body still to send.
    pub(super) fn request_started(&self, body_follows: bool) {
        let now = Instant::now();
        self.set(|_| {
            if body_follows {
                Phase::Body(now)
            } else {
                Phase::Busy
            }
        });
    }

    /// The whole body is in (or the client broke it off): the request is
    /// the handler's alone.
    pub(super) fn body_received(&self) {
        self.set(|phase| match phase {
            Phase::Body(_) => Phase::Busy,
            other => other,
        });
    }

    /// The handler has answered: the connection is idle once it is written.
    pub(super) fn response_ready(&self) {
        let deadline = after(Instant::now(), self.timeouts.idle);
        self.set(|_| Phase::Idle(deadline));
    }

    fn bytes_arrived(&self) {
        let deadline = after(Instant::now(), self.timeouts.header);
        self.set(|phase| match phase {
            Phase::Idle(_) => Phase::Head(deadline),
            other => other,
        });
    }

    /// When reading must have got somewhere; None while the handler has the
    /// request (it bounds the body and its own work).
    pub(super) fn read_deadline(&self) -> Option<Instant> {
        match *self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            Phase::Head(d) | Phase::Idle(d) => Some(d),
            Phase::Body(_) | Phase::Busy => None,
        }
    }

    /// Whether the connection may be closed to make room for another, and
    /// if so, from when it has waited for its client (the earliest goes
    /// first): one waiting for a request head, idle, or waiting for a body,
    /// once it is [`SHED_AFTER`] old; never one whose request is being served.
    pub(super) fn waiting_since(&self, now: Instant) -> Option<Instant> {
        if now.saturating_duration_since(self.accepted) < SHED_AFTER {
            return None;
        }
        match *self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            Phase::Head(d) => Some(d.checked_sub(self.timeouts.header).unwrap_or(d)),
            Phase::Idle(d) => Some(d.checked_sub(self.timeouts.idle).unwrap_or(d)),
            Phase::Body(since) => Some(since),
            Phase::Busy => None,
        }
    }
}

/// A stream whose reads fail with `TimedOut` once the [`Clock`]'s deadline
/// has passed, and whose writes fail once the client has taken none of the
/// pending bytes for the idle timeout. hyper then closes the connection.
pub(super) struct Watched<S> {
    inner: S,
    clock: Arc<Clock>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled: bool,
}

impl<S> Watched<S> {
    /// Watches `inner` with `clock`.
    pub(super) fn new(inner: S, clock: Arc<Clock>) -> Watched<S> {
        let first = clock.read_deadline().unwrap_or_else(Instant::now);
        Watched {
            inner,
            clock,
            read_timer: Box::pin(tokio::time::sleep_until(first)),
            write_timer: Box::pin(tokio::time::sleep_until(first)),
            write_stalled: false,
        }
    }

    fn read_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.clock.read_deadline() else {
            return false;
        };
        if self.read_timer.deadline() != deadline {
            self.read_timer.as_mut().reset(deadline);
        }
        self.read_timer.as_mut().poll(cx).is_ready()
    }

    /// Runs the write timer while the client takes none of our bytes.
    fn write_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stalled = false;
            return polled;
        }
        if !self.write_stalled {
            self.write_stalled = true;
            let deadline = after(Instant::now(), self.clock.timeouts.idle);
            self.write_timer.as_mut().reset(deadline);
        }
        ready!(self.write_timer.as_mut().poll(cx));
        Poll::Ready(Err(timed_out("the client read none of the response")))
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Checked before reading too: a client that trickles bytes in
        // never leaves a read pending, and must not outrun the deadline.
        if this.read_expired(cx) {
            return Poll::Ready(Err(timed_out("header or idle timeout")));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.clock.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_progress(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_progress(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.write_progress(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(30),
    };

    #[test]
    fn trickling_bytes_do_not_move_the_header_deadline() {
        let accepted = Instant::now();
        let clock = Clock::new(accepted, T);
        clock.bytes_arrived();
        clock.bytes_arrived();
        assert_eq!(clock.read_deadline(), Some(accepted + T.header));
    }

    #[test]
    fn huge_timeouts_mean_never_instead_of_a_panic() {
        let huge = Timeouts {
            header: Duration::MAX,
            idle: Duration::MAX,
        };
        let clock = Clock::new(Instant::now(), huge);
        clock.response_ready();
        clock.bytes_arrived();
        assert!(clock.read_deadline().unwrap() > Instant::now() + T.idle);
    }

    #[test]
    fn idle_runs_until_the_next_request_starts() {
        let clock = Clock::new(Instant::now(), T);
        clock.request_started(true);
        assert_eq!(clock.read_deadline(), None, "the handler bounds the body");
        let before = Instant::now();
        clock.response_ready();
        let idle = clock.read_deadline().unwrap();
        assert!(idle >= before + T.idle);
        clock.bytes_arrived();
        let head = clock.read_deadline().unwrap();
        assert!(head < idle, "the header timeout runs from the first byte");
        clock.bytes_arrived();
        assert_eq!(clock.read_deadline(), Some(head));
    }
}

#[cfg(test)]
mod shedding {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(30),
    };

    #[test]
    fn only_connections_waiting_on_their_client_may_be_shed() {
        let accepted = Instant::now();
        let later = accepted + SHED_AFTER;
        let clock = Clock::new(accepted, T);
        assert_eq!(clock.waiting_since(accepted), None, "too young");
        assert_eq!(
            clock.waiting_since(later),
            Some(accepted),
            "waiting for a head"
        );
        clock.request_started(true);
        let body = clock.waiting_since(later).expect("waiting for a body");
        assert!(body >= accepted);
        clock.body_received();
        assert_eq!(clock.waiting_since(later), None, "being served");
        clock.request_started(false);
        assert_eq!(clock.waiting_since(later), None, "no body: served at once");
        clock.response_ready();
        assert!(clock.waiting_since(later + T.idle).is_some(), "idle");
    }
}
