//! The accept loop of `hsm-csr serve`, for HTTP and HTTPS alike: HTTP/1.1
//! only (RFC 9112), at most a fixed number of connections at once, each
//! under the deadlines of `deadline`, and a graceful stop.
//!
//! The connection limit is a semaphore: the process never holds more
//! connections than it has file descriptors for, beside the token's and its
//! log's. When every permit is held and another client arrives, the open
//! connection that has waited longest for a request (one still sending its
//! head, or idle between requests; never one whose request is being
//! served) is closed to make room. So a crowd of idle or slow clients cannot
//! keep a client that sends its request at once waiting, not even for one
//! header timeout; and while every connection is busy with a request, new
//! clients wait in the kernel's listen backlog.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::ServiceConfig;
use super::deadline::{Clock, Timeouts, Watched};
use super::shedding::{Open, place_for};
use crate::error::{Error, Result};

/// File descriptors kept free for everything but connections and token
/// sessions: stdio and the log, the listener, the runtime's own, and the
/// config and TLS files.
const RESERVED_FDS: u64 = 32;

/// File descriptors kept free per token session: SoftHSM2 opens an object
/// file and its lock file while it reads an object; a network HSM's module
/// holds a socket.
const FDS_PER_SESSION: u64 = 4;

/// How long accepting pauses after an error that is not the client's,
/// such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How serving ended after the stop signal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ran out with connections still open; they are cut
    /// off when the runtime is dropped.
    DeadlinePassed,
}

/// `max_connections`, lowered to what the file-descriptor limit
/// (RLIMIT_NOFILE) allows once the process and its `sessions` token
/// sessions have theirs; and that limit.
fn connection_limit(max_connections: usize, sessions: usize) -> (usize, Option<u64>) {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let reserved = RESERVED_FDS.saturating_add(FDS_PER_SESSION.saturating_mul(sessions as u64));
    let allowed = soft.map_or(usize::MAX, |s| {
        usize::try_from(s.saturating_sub(reserved)).unwrap_or(usize::MAX)
    });
    let limit = max_connections
        .min(allowed)
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize)
        .max(1);
    (limit, soft)
}

/// Binds `[service] listen` and serves `router` there, over HTTPS when
/// `tls_cert` and `tls_key` are set, until SIGINT or SIGTERM; then lets
/// requests in flight finish for up to `shutdown_timeout_ms`.
///
/// # Errors
/// `Config.Invalid` when the address cannot be bound or the TLS files
/// cannot be used.
pub(crate) async fn run(
    config: &ServiceConfig,
    sessions: usize,
    router: Router,
    what: &str,
) -> Result<Stopped> {
    let addr: SocketAddr = config
        .listen
        .parse()
        .map_err(|e| Error::Config(format!("[service] listen {:?}: {e}", config.listen)))?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(super::tls::acceptor(cert, key)?),
        _ => {
            return Err(Error::Config(
                "[service] tls_cert and tls_key go together.".into(),
            ));
        }
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let addr = listener.local_addr().unwrap_or(addr);
    let scheme = if tls.is_some() { "https" } else { "http" };
    log::info!("{what} {scheme}://{addr} (HTTP/1.1)");
    if config.explorer {
        super::explorer::announce(addr, tls.is_some());
    }
    let (max_connections, fd_limit) = connection_limit(config.max_connections, sessions);
    let fd_limit = fd_limit.map_or("unlimited".to_owned(), |n| n.to_string());
    log::info!(
        "accepting at most {max_connections} connections at once \
         ([service] max_connections {}, file-descriptor limit {fd_limit})",
        config.max_connections
    );
    if max_connections < config.max_connections {
        log::warn!(
            "the file-descriptor limit ({fd_limit}) allows fewer connections than \
             max_connections; raise it (ulimit -n, systemd LimitNOFILE=) to serve more"
        );
    }
    let grace = Duration::from_millis(config.shutdown_timeout_ms);
    let serving = Serving {
        router,
        tls,
        timeouts: Timeouts {
            header: Duration::from_millis(config.header_timeout_ms),
            idle: Duration::from_millis(config.idle_timeout_ms),
        },
        max_connections,
        read_buffer: read_buffer(config),
    };
    let stop = async move {
        shutdown_signal().await;
        log::info!(
            "stopping: no new requests; requests in flight have {} ms to finish",
            grace.as_millis()
        );
    };
    Ok(serve(listener, serving, stop, grace).await)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// What every connection shares.
#[derive(Clone)]
struct Serving {
    /// The application.
    router: Router,
    /// TLS, or None for plain HTTP.
    tls: Option<TlsAcceptor>,
    /// The per-connection deadlines.
    timeouts: Timeouts,
    /// Most connections open at once (see [`connection_limit`]).
    max_connections: usize,
    /// hyper's read buffer per connection (see [`read_buffer`]).
    read_buffer: usize,
}

/// The most a connection's read buffer may hold: a request head
/// (`max_header_bytes`, plus the request line) and a body's worth
/// (`max_body_bytes`), and never under hyper's minimum of 8 KiB. A client
/// that sends more before its head is complete is answered 431 and closed,
/// so memory is bounded by `max_connections` × (this + `max_body_bytes`)
/// whatever clients send.
fn read_buffer(config: &ServiceConfig) -> usize {
    config
        .max_header_bytes
        .saturating_add(config.max_body_bytes)
        .max(8192)
}

/// Accepts connections on `listener` until `stop` completes, then lets
/// open connections finish their requests for up to `grace`.
async fn serve(
    listener: TcpListener,
    serving: Serving,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> Stopped {
    let permits = Arc::new(Semaphore::new(serving.max_connections));
    let open = Arc::new(Open::default());
    let (stopping, stopped) = watch::channel(false);
    tokio::pin!(stop);
    let mut backing_off = false;
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                if std::mem::take(&mut backing_off) {
                    log::warn!("accepting connections again");
                }
                let Some(permit) = place_for(&permits, &open, &mut stop).await else {
                    break;
                };
                let serving = serving.clone();
                let stopped = stopped.clone();
                let clock = Clock::new(Instant::now(), serving.timeouts);
                let shed = Arc::new(Notify::new());
                let id = open.add(Arc::clone(&clock), Arc::clone(&shed));
                let open = Arc::clone(&open);
                tokio::spawn(async move {
                    connection(stream, serving, clock, shed, stopped).await;
                    open.remove(id);
                    drop(permit);
                });
            }
            Err(e) if is_the_clients(&e) => log::debug!("accept: {e}"),
            Err(e) => {
                if !std::mem::replace(&mut backing_off, true) {
                    log::warn!(
                        "cannot accept connections ({e}); retrying every {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    // New clients are refused from here on.
    drop(listener);
    let _ = stopping.send(true);
    let all = u32::try_from(serving.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(grace, permits.acquire_many(all)).await {
        Ok(_) => Stopped::Drained,
        Err(_) => Stopped::DeadlinePassed,
    }
}

/// Errors that concern one client only: accept the next one at once.
fn is_the_clients(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// One connection: the TLS handshake if any, then HTTP/1.1 until the client
/// leaves, a deadline passes, it is shed to make room, or the service stops.
async fn connection(
    stream: tokio::net::TcpStream,
    serving: Serving,
    clock: Arc<Clock>,
    shed: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match &serving.tls {
        None => http(stream, serving, clock, shed, stopped).await,
        Some(acceptor) => {
            // The handshake counts towards the first request's header timeout.
            let deadline = clock.read_deadline().unwrap_or_else(Instant::now);
            let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return log::debug!("TLS handshake failed: {e}"),
                    Err(_) => return log::debug!("TLS handshake timed out"),
                },
                () = shed.notified() => return log::debug!("shed during the TLS handshake"),
                _ = stopped.wait_for(|s| *s) => return,
            };
            http(tls, serving, clock, shed, stopped).await;
        }
    }
}

async fn http<S>(
    io: S,
    serving: Serving,
    clock: Arc<Clock>,
    shed: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = TowerToHyperService::new(serving.router);
    let marks = Arc::clone(&clock);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        marks.request_started(!hyper::body::Body::is_end_stream(request.body()));
        let request = request.map(|body| ClientBody {
            inner: body,
            clock: Arc::clone(&marks),
        });
        let answer = hyper::service::Service::call(&app, request);
        let marks = Arc::clone(&marks);
        async move {
            let response = answer.await;
            marks.response_ready();
            response
        }
    });
    let mut builder = http1::Builder::new();
    // The timer is set for hyper's own use; its header timeout is replaced
    // by [`Watched`] (see super::deadline for why).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(serving.read_buffer)
        .keep_alive(true);
    let conn =
        builder.serve_connection(TokioIo::new(Watched::new(io, Arc::clone(&clock))), service);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            done = conn.as_mut() => return finished(done),
            _ = stopped.wait_for(|s| *s) => break conn.as_mut().graceful_shutdown(),
            // Closed only while still waiting on its client (a notice
            // that arrives once the request is being served is stale).
            () = shed.notified() => if clock.waiting_since(Instant::now()).is_some() {
                return log::debug!("closed to make room for a new client");
            },
        }
    }
    finished(conn.await);
}

/// A request body that tells the connection's [`Clock`] when the client
/// has sent all of it.
struct ClientBody {
    inner: Incoming,
    clock: Arc<Clock>,
}

impl hyper::body::Body for ClientBody {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>>
    {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            self.clock.body_received();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn finished(done: hyper::Result<()>) {
    if let Err(e) = done {
        log::debug!("connection closed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};

    use super::*;

    #[test]
    fn the_limit_stays_below_the_file_descriptor_limit() {
        let (limit, soft) = connection_limit(usize::MAX, 2);
        if let Some(soft) = soft {
            assert!((limit as u64) <= soft.saturating_sub(RESERVED_FDS + 2 * FDS_PER_SESSION));
        }
        assert!(limit >= 1);
        assert_eq!(connection_limit(0, 2).0, 1);
    }

    /// Serves `router` with room for one connection, until the returned
    /// sender is used.
    async fn one_place(
        router: Router,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Stopped>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Serving {
            router,
            tls: None,
            timeouts: Timeouts {
                header: Duration::from_secs(30),
                idle: Duration::from_secs(30),
            },
            max_connections: 1,
            read_buffer: 8192,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve(listener, serving, stopped, Duration::from_secs(10)));
        (addr, stop, server)
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }

    /// A client that sends nothing holds the only place only until another
    /// arrives, long before the (30 s) header timeout.
    #[tokio::test]
    async fn a_new_client_takes_the_place_of_one_that_sent_nothing() {
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let (addr, stop, server) = one_place(router).await;
        let (answer, first_open, waited) = tokio::task::spawn_blocking(move || {
            let mut first = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let asked = std::time::Instant::now();
            let answer = get(addr, "/");
            let waited = asked.elapsed();
            first.set_nonblocking(true).unwrap();
            let first_open =
                matches!(first.read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
            (answer, first_open, waited)
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(!first_open, "the silent client kept its place");
        assert!(waited < Duration::from_secs(20), "{waited:?}");
        let _ = stop.send(());
        assert_eq!(server.await.unwrap(), Stopped::Drained);
    }

    /// A connection whose request is being served keeps its place: the next
    /// client waits for it, and both are answered.
    #[tokio::test]
    async fn a_request_being_served_is_never_shed() {
        let router = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    "slow"
                }),
            )
            .route("/", axum::routing::get(|| async { "hi" }));
        let (addr, stop, server) = one_place(router).await;
        let (slow, quick) = tokio::task::spawn_blocking(move || {
            let slow = std::thread::spawn(move || get(addr, "/slow"));
            std::thread::sleep(Duration::from_millis(200));
            (slow, get(addr, "/"))
        })
        .await
        .unwrap();
        let slow = tokio::task::spawn_blocking(move || slow.join().unwrap())
            .await
            .unwrap();
        assert!(
            slow.starts_with("HTTP/1.1 200") && slow.ends_with("slow"),
            "{slow:?}"
        );
        assert!(quick.starts_with("HTTP/1.1 200"), "{quick:?}");
        let _ = stop.send(());
        assert_eq!(server.await.unwrap(), Stopped::Drained);
    }
}
